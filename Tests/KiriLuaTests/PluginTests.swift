import Foundation
import XCTest
@testable import KiriLua

/// Plugin loading (issue 3, item 1): lazy resolution by file name, user folders before bundled ones,
/// kiri.register, and errors that name the plugin's file.
final class PluginTests: XCTestCase {
    var bundled: String!
    var user: String!

    override func setUpWithError() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-plugins-\(UUID().uuidString)").path
        bundled = root + "/bundled"
        user = root + "/user"
        try plugin(bundled, "samplers/scale", "-- Multiplies x by 2.\nreturn function(model, x) return x * 2 end")
        try plugin(bundled, "samplers/keep", "-- Returns x.\nreturn function(model, x) return x end")
        try plugin(user, "samplers/scale", "-- Multiplies x by 3.\nreturn function(model, x) return x * 3 end")
        try plugin(user, "samplers/syntax", "-- Broken.\nreturn function(model, x) return x +")
        try plugin(user, "samplers/number", "-- Not a function.\nreturn 42")
        try plugin(user, "schedules/fixed", "-- Two steps.\nreturn function(opts) return kiri.tensor({opts.top, 1, 0}) end")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: (bundled as NSString).deletingLastPathComponent)
    }

    func plugin(_ folder: String, _ name: String, _ source: String) throws {
        let path = folder + "/" + name + ".lua"
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try source.write(toFile: path, atomically: true, encoding: .utf8)
    }

    var catalog: PluginCatalog {
        PluginCatalog(folders: [.init(path: user, isBundled: false), .init(path: bundled, isBundled: true)])
    }

    func run(_ source: String) throws -> String {
        var printed = ""
        let runtime = try LuaRuntime(plugins: catalog, output: { printed += $0 })
        defer { runtime.close() }
        try runtime.run(source: source, name: "recipe.lua")
        return printed
    }

    func failure(_ source: String) -> String {
        do {
            _ = try run(source)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    func testUserPluginOverridesBundledAndBundledOnesStillResolve() throws {
        XCTAssertEqual(try run("""
        print(kiri.samplers.scale(nil, kiri.ones(1)):item(), kiri.samplers.keep(nil, kiri.ones(1)):item())
        print(kiri.schedules.fixed{top = 5}[1])
        """), "3.0\t1.0\n5.0\n")
    }

    func testRegisterAddsAndOverridesPluginsForThisRunOnly() throws {
        XCTAssertEqual(try run("""
        kiri.register("sampler", "scale", function(model, x) return x * 10 end)
        kiri.register("schedule", "mine", function(opts) return kiri.tensor({opts.n, 0}) end)
        print(kiri.samplers.scale(nil, kiri.ones(1)):item(), kiri.schedules.mine{n = 4}[1])
        """), "10.0\t4.0\n")
        XCTAssertEqual(try run("print(kiri.samplers.scale(nil, kiri.ones(1)):item())"), "3.0\n", "a fresh run forgets it")
        XCTAssertTrue(failure("kiri.register('solver', 'x', print)").contains("bad argument #1 to 'register'"))
        XCTAssertTrue(failure("kiri.register('sampler', 'a b', print)").contains("bad argument #2 to 'register'"))
        XCTAssertTrue(failure("kiri.register('sampler', 'x', 5)").contains("bad argument #3 to 'register' (function expected, got number)"))
    }

    func testDomainTablesAreReadOnlyExceptThroughRegister() {
        XCTAssertTrue(failure("kiri.samplers.keep = print").contains("attempt to modify kiri.samplers.keep (use kiri.register)"))
        XCTAssertTrue(failure("kiri.samplers = {}").contains("read-only"))
    }

    func testBadPluginsGetErrorsNamingTheirFile() {
        let syntax = failure("return kiri.samplers.syntax")
        // Named inside their plugin folder: messages a script can catch show no host folder.
        XCTAssertTrue(syntax.hasPrefix("samplers/syntax.lua:2:"), syntax)
        let number = failure("return kiri.samplers.number")
        XCTAssertTrue(number.hasPrefix("samplers/number.lua: a sampler plugin must return a function, got number"), number)
        let unknown = failure("return kiri.samplers.nosuch")
        XCTAssertTrue(unknown.contains("recipe.lua:1: unknown sampler 'nosuch' (available: keep, number, scale, syntax)"), unknown)
    }

    func testPairsListsEveryPluginOfADomain() throws {
        XCTAssertEqual(try run("""
        kiri.register("schedule", "extra", function() end)
        local names = {}
        for name, fn in pairs(kiri.schedules) do names[#names + 1] = name .. ":" .. type(fn) end
        print(table.concat(names, " "))
        """), "extra:function fixed:function\n")
    }

    func testCatalogListsDescriptionsAndOrigins() {
        let entries = catalog.entries(domain: "samplers")
        XCTAssertEqual(entries.map(\.name), ["keep", "number", "scale", "syntax"])
        let scale = entries.first { $0.name == "scale" }
        XCTAssertEqual(scale?.description, "Multiplies x by 3.")
        XCTAssertEqual(scale?.isBundled, false)
        XCTAssertEqual(scale?.overridesBundled, true)
        XCTAssertEqual(entries.first { $0.name == "keep" }?.isBundled, true)
        XCTAssertNil(catalog.file(domain: "samplers", name: "../scale"), "names are identifiers, never paths")
    }
}
