import Foundation
import KiriImage
import XCTest
@testable import KiriLua

/// The Lua API as a real run has it, against what users read: the LuaLS stubs (docs/luals) and the reference
/// (docs/lua-api.md). Everything a script can reach is enumerated at run time (the `kiri` table recursively, every
/// bundled plugin through the domain tables, the Tensor methods and operators from the binding registry, the default
/// model's members), so a binding or plugin added without its stub and its entry fails here, and so does a stub
/// left behind by a removed one.
final class LuaAPIReferenceTests: XCTestCase {
    static let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The operators LuaLS can declare with `---@operator`; the tensor's other metamethods (__index, __tostring, ...)
    /// have no annotation.
    static let luaLSOperators: Set<String> = ["add", "sub", "mul", "div", "mod", "pow", "unm", "idiv", "concat", "len",
                                              "band", "bor", "bxor", "shl", "shr", "bnot", "call"]

    static var tensorMethods: [String] { Bindings.all.filter { $0.tables.contains("Tensor") }.map(\.name) }

    static var tensorOperators: [String] {
        Bindings.all.filter { $0.tables.contains("meta") }.map { String($0.name.dropFirst(2)) }
            .filter { luaLSOperators.contains($0) }
    }

    static var libraryModules: [String] {
        let folder = checkout.appendingPathComponent("Plugins/lib").path
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
            .filter { $0.hasSuffix(".lua") }.map { String($0.dropLast(4)) }.sorted()
    }

    /// What a script reaches, named as the stubs name it ("kiri.add", "kiri.image", "kiri.samplers.euler",
    /// "Tensor:add_", "Tensor operator add", "Model:encode", "Model.info", "Dataset:batch", and a trainable
    /// model's, AdamW's and an EMA's members as "TrainableModel:backward", "AdamW:step", "EMA:update"), and the
    /// functions of each `lib` module ("schedule.sigma_range").
    func reachable() throws -> (api: Set<String>, libraries: Set<String>) {
        let quotedMethods = Self.tensorMethods.map { "\"\($0)\"" }.joined(separator: ", ")
        let quotedModules = Self.libraryModules.map { "\"\($0)\"" }.joined(separator: ", ")
        // A dataset of one image in one class, for its members.
        let images = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-reference-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: images + "/class", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: images) }
        try Data(try PNGImage(width: 1, height: 1, channels: 1, pixels: [0]).encoded())
            .write(to: URL(fileURLWithPath: images + "/class/a.png"))
        let printed = try runRecipe("""
            local function walk(t, prefix)
                for key, value in pairs(t) do
                    print("api", prefix .. key)
                    if type(value) == "table" then walk(value, prefix .. key .. ".") end
                end
            end
            walk(kiri, "kiri.")
            local model <close> = kiri.models.default()
            for key, value in pairs(model) do
                print("api", (type(value) == "function" and "Model:" or "Model.") .. key)
            end
            local dataset <close> = kiri.data.images("\(images)")
            for key, value in pairs(dataset) do
                print("api", (type(value) == "function" and "Dataset:" or "Dataset.") .. key)
            end
            local trainable <close> = kiri.models.create({_class_name = "UNet2DModel", in_channels = 1, out_channels = 1,
                block_out_channels = {8}, down_block_types = {"DownBlock2D"}, up_block_types = {"UpBlock2D"},
                norm_num_groups = 4, layers_per_block = 1})
            for key, value in pairs(trainable) do
                print("api", (type(value) == "function" and "TrainableModel:" or "TrainableModel.") .. key)
            end
            for key in pairs(kiri.optim.adamw(trainable)) do print("api", "AdamW:" .. key) end
            for key in pairs(kiri.optim.ema(trainable, 0.9)) do print("api", "EMA:" .. key) end
            local t = kiri.zeros({1})
            for _, name in ipairs({\(quotedMethods)}) do
                local ok, method = pcall(function() return t[name] end)
                if ok and type(method) == "function" then print("api", "Tensor:" .. name) end
            end
            for _, name in ipairs({\(quotedModules)}) do
                for key, value in pairs(require("lib." .. name)) do
                    if type(value) == "function" then print("lib", name .. "." .. key) end
                end
            end
            """)
        var api = Set(Self.tensorOperators.map { "Tensor operator \($0)" }), libraries = Set<String>()
        for line in printed.split(separator: "\n") {
            let fields = line.split(separator: "\t", maxSplits: 1).map(String.init)
            guard fields.count == 2 else { continue }
            if fields[0] == "api" { api.insert(fields[1]) } else if fields[0] == "lib" { libraries.insert(fields[1]) }
        }
        return (api, libraries)
    }

    /// The classes of the objects a script gets, and how the reference writes a member of each (`t:add_`, `m.info`).
    static let objects = ["Tensor": "t", "Model": "m", "Dataset": "ds", "TrainableModel": "m", "AdamW": "opt", "EMA": "ema"]

    /// The names the stubs declare: `function kiri.x.y(`, and `function Tensor:x(`, `Model:x(`, ... for the objects
    /// in `objects`; the `---@field NAME` lines of the classes `kiri`, `kiri.*` and those objects (as "kiri.NAME",
    /// "Model.NAME"); and the `---@operator` lines of class Tensor. Annotation-only classes (SamplerOptions, ...)
    /// are not API.
    static func stubNames() throws -> Set<String> {
        let folder = checkout.appendingPathComponent("docs/luals")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".lua") }
        var names = Set<String>()
        for file in files {
            var currentClass: String?
            for rawLine in try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8).split(separator: "\n") {
                let line = rawLine.trimmingCharacters(in: .whitespaces)
                if line.hasPrefix("function ") {
                    let declared = line.dropFirst("function ".count).prefix { $0 != "(" }
                    if declared.hasPrefix("kiri.") || objects.keys.contains(where: { declared.hasPrefix($0 + ":") }) {
                        names.insert(String(declared))
                    }
                }
                guard line.hasPrefix("---") else { currentClass = nil; continue }
                let words = line.split(separator: " ").map(String.init)
                guard words.count >= 2 else { continue }
                switch words[0] {
                case "---@class":
                    let name = String(words[1].prefix { $0 != ":" })
                    currentClass = name == "kiri" || name.hasPrefix("kiri.") || objects[name] != nil ? name : nil
                case "---@field" where currentClass != nil && currentClass != "Tensor":
                    let field = words[1].hasSuffix("?") ? String(words[1].dropLast()) : words[1]
                    if field.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) { names.insert("\(currentClass!).\(field)") }
                case "---@operator" where currentClass == "Tensor":
                    names.insert("Tensor operator " + words[1].prefix { $0.isLetter })
                default:
                    break
                }
            }
        }
        return names
    }

    func testEveryBindingAndPluginHasAStubAndEveryStubExists() throws {
        let (api, _) = try reachable()
        let stubs = try Self.stubNames()
        // The enumeration itself must be complete, or the comparison proves nothing.
        XCTAssertGreaterThan(Self.tensorMethods.count, 50)
        for domain in PluginCatalog.domains {
            let folder = Self.checkout.appendingPathComponent("Plugins/\(domain)").path
            for file in try FileManager.default.contentsOfDirectory(atPath: folder) where file.hasSuffix(".lua") {
                XCTAssert(api.contains("kiri.\(domain).\(file.dropLast(4))"), "the run did not list Plugins/\(domain)/\(file)")
            }
        }
        for name in Self.tensorMethods {
            XCTAssert(api.contains("Tensor:\(name)"), "t.\(name) is not a function on a real tensor")
        }
        let missing = api.subtracting(stubs).sorted(), stale = stubs.subtracting(api).sorted()
        XCTAssert(missing.isEmpty, "reachable in a run but not declared in docs/luals: \(missing.joined(separator: ", "))")
        XCTAssert(stale.isEmpty, "declared in docs/luals but not reachable in a run: \(stale.joined(separator: ", "))")
        print("\(api.count) names reachable, \(stubs.count) declared")
    }

    func testTheReferenceMentionsEveryFunctionPluginAndLibraryFunction() throws {
        let (api, libraries) = try reachable()
        let reference = try String(contentsOf: Self.checkout.appendingPathComponent("docs/lua-api.md"), encoding: .utf8)
        var missing: [String] = []
        for name in api.sorted() where !name.hasPrefix("Tensor operator") {
            if !Self.referenceMentions(name, in: reference) { missing.append(name) }
        }
        for name in libraries.sorted() where !Self.mentions(name, in: reference) { missing.append("lib." + name) }
        XCTAssertGreaterThan(libraries.count, 50, "the lib modules' functions were not listed")
        XCTAssert(missing.isEmpty, "not in docs/lua-api.md: \(missing.joined(separator: ", "))")
    }

    /// How the reference writes each kind of name: `kiri.add`, `t:add_`, `m:encode`, `m.info`, `ds:batch`, `opt:step`;
    /// a plugin either as `kiri.samplers.euler` or as `` `euler `` under a heading that names `kiri.samplers`.
    static func referenceMentions(_ name: String, in reference: String) -> Bool {
        if let separator = name.firstIndex(where: { $0 == ":" || $0 == "." }), let object = objects[String(name[..<separator])] {
            return mentions(object + name[separator...], in: reference)
        }
        if mentions(name, in: reference) { return true }
        let parts = name.split(separator: ".")
        guard parts.count == 3 else { return false }
        let domain = "kiri.\(parts[1])", plugin = "`" + parts[2]
        var headings: [(level: Int, text: String)] = []
        for line in reference.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("#") {
                let level = line.prefix { $0 == "#" }.count
                headings.removeAll { $0.level >= level }
                headings.append((level, String(line)))
            } else if headings.contains(where: { mentions(domain, in: $0.text) }) && mentions(plugin, in: String(line)) {
                return true
            }
        }
        return false
    }

    /// Whether `token` occurs in `text` as a whole name: not followed by a letter, digit or `_`, nor preceded by one
    /// or by a `.` (so `t:add` does not match `t:add_`, nor `schedule.steps` match `lib_schedule.steps`).
    static func mentions(_ token: String, in text: String) -> Bool {
        func isNamePart(_ character: Character?) -> Bool {
            guard let character else { return false }
            return character.isLetter || character.isNumber || character == "_"
        }
        var searchRange = text.startIndex..<text.endIndex
        while let found = text.range(of: token, range: searchRange) {
            let before = found.lowerBound == text.startIndex ? nil : text[text.index(before: found.lowerBound)]
            let after = found.upperBound == text.endIndex ? nil : text[found.upperBound]
            if !isNamePart(after) && !isNamePart(before) && before != "." { return true }
            searchRange = found.upperBound..<text.endIndex
        }
        return false
    }
}
