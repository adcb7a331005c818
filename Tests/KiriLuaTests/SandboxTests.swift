import Foundation
import XCTest
@testable import KiriLua
import KiriTensor
#if canImport(Glibc)
import Glibc
#endif

/// glibc's malloc_trim (not in the Glibc module): returns free heap pages, so RSS measures live memory.
@_silgen_name("malloc_trim") private func mallocTrim(_ pad: Int) -> Int32

/// The sandbox cases of /work/shared/security-cases.md, sections A–D (cases 1–21). Every test checks
/// two things: the script gets the specific error it deserves, and the host then runs the next
/// script correctly (`assertHostHealthy`). Every run also checks that closing the runtime gives all
/// of its memory back (`budget.used` returns to at most its value right after creation).
final class SandboxTests: XCTestCase {

    // MARK: - Harness

    struct Outcome {
        var output: String
        var failure: ScriptFailure?
        /// `budget.used` right after the runtime was made, before the script ran.
        var baseline: Int
        var peak: Int
        var usedAfterClose: Int
        var seconds: Double
    }

    private final class Printed { var text = "" }

    /// Runs `source` in a fresh runtime (one Lua state per run), closes it, and checks that the budget
    /// is back to its baseline.
    @discardableResult
    func run(_ source: String, timeout: Double = 2, memory: Int = 128 << 20, files: FileAccess = FileAccess(),
             name: String = "case.lua", file: StaticString = #filePath, line: UInt = #line) -> Outcome {
        let printed = Printed()
        let runtime: LuaRuntime
        do {
            runtime = try LuaRuntime(limits: SandboxLimits(timeout: timeout, memory: memory), files: files,
                                     output: { printed.text += $0 })
        } catch {
            XCTFail("cannot make a runtime: \(error)", file: file, line: line)
            return Outcome(output: "", failure: nil, baseline: 0, peak: 0, usedAfterClose: 0, seconds: 0)
        }
        let baseline = runtime.budget.used
        var failure: ScriptFailure?
        let start = DispatchTime.now()
        do {
            try runtime.run(source: source, name: name)
        } catch let error as ScriptFailure {
            failure = error
        } catch {
            XCTFail("unexpected error type: \(error)", file: file, line: line)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        let peak = runtime.budget.peak
        runtime.close()
        let after = runtime.budget.used
        XCTAssertLessThanOrEqual(after, baseline, "memory not returned after close()", file: file, line: line)
        return Outcome(output: printed.text, failure: failure, baseline: baseline, peak: peak, usedAfterClose: after,
                       seconds: seconds)
    }

    /// Runs a script that must succeed; returns what it printed.
    @discardableResult
    func expectSuccess(_ source: String, timeout: Double = 5, memory: Int = 128 << 20, files: FileAccess = FileAccess(),
                       file: StaticString = #filePath, line: UInt = #line) -> String {
        let outcome = run(source, timeout: timeout, memory: memory, files: files, file: file, line: line)
        if let failure = outcome.failure { XCTFail("script failed: \(failure.kind) \(failure.message)", file: file, line: line) }
        return outcome.output
    }

    /// Runs a script that must fail with `kind` (any of `kinds`) and a message containing every
    /// fragment (a fragment starting "case.lua:" must start the message); then checks the host still works.
    @discardableResult
    func expectFailure(_ source: String, _ kinds: [ScriptFailure.Kind] = [.error], _ fragments: [String],
                       timeout: Double = 2, memory: Int = 128 << 20, files: FileAccess = FileAccess(),
                       file: StaticString = #filePath, line: UInt = #line) -> Outcome {
        let outcome = run(source, timeout: timeout, memory: memory, files: files, file: file, line: line)
        if let failure = outcome.failure {
            XCTAssertTrue(kinds.contains(failure.kind), "kind \(failure.kind), expected \(kinds): \(failure.message)",
                          file: file, line: line)
            for fragment in fragments {
                if fragment.hasPrefix("case.lua:") {   // where the message must start: the script's own line
                    XCTAssertTrue(failure.message.hasPrefix(fragment), "message does not start with '\(fragment)': \(failure.message)",
                                  file: file, line: line)
                } else {
                    XCTAssertTrue(failure.message.contains(fragment), "'\(fragment)' not in: \(failure.message)",
                                  file: file, line: line)
                }
            }
        } else {
            XCTFail("script succeeded (printed \(outcome.output.debugDescription)); expected \(kinds) with \(fragments)",
                    file: file, line: line)
        }
        assertHostHealthy(file: file, line: line)
        return outcome
    }

    /// The host still runs an ordinary script correctly: tensors, strings, tables and print.
    func assertHostHealthy(file: StaticString = #filePath, line: UInt = #line) {
        let outcome = run("""
            local a = kiri.tensor({ {1, 2}, {3, 4} })
            local b = a:matmul(a) + 1                     -- {{8, 11}, {16, 23}}
            local words = {}
            for w in ("host is healthy"):gmatch("%a+") do words[#words + 1] = w end
            table.insert(words, 1, "the")
            print(string.format("%g %s %d", b:sum(), table.concat(words, "-"), #kiri.zeros({3, 5})))
            """, timeout: 10, file: file, line: line)
        XCTAssertNil(outcome.failure, "host unhealthy: \(outcome.failure?.message ?? "")", file: file, line: line)
        XCTAssertEqual(outcome.output, "58 the-host-is-healthy 3\n", "host unhealthy", file: file, line: line)
    }

    /// A fresh temporary folder, removed after the test.
    func temporaryFolder() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-sandbox-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return FileAccess.realPath(path) ?? path
    }

    /// Resident set size of this process, after returning free heap pages to the system.
    func residentBytes() -> Int {
        _ = mallocTrim(0)
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return (Int(fields[1]) ?? 0) * sysconf(Int32(_SC_PAGESIZE))
    }

    /// A Lua string literal for `text`.
    func lua(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    // MARK: - A. Escapes

    /// A.1: no files, processes, environment, debugger or C loaders.
    func testA1_DangerousLibrariesAreAbsent() {
        let output = expectSuccess("""
            local absent = {
                io = io, package = package, debug = debug, dofile = dofile, loadfile = loadfile,
                loadstring = loadstring, rawset = rawset, setfenv = setfenv, getfenv = getfenv,
                module = module, newproxy = newproxy, warn = warn,
                ["os.execute"] = os.execute, ["os.getenv"] = os.getenv, ["os.exit"] = os.exit,
                ["os.remove"] = os.remove, ["os.rename"] = os.rename, ["os.tmpname"] = os.tmpname,
                ["os.setlocale"] = os.setlocale, ["os.difftime"] = os.difftime,
                ["string.dump"] = string.dump,
            }
            for name, value in pairs(absent) do print("present: " .. name) end
            for _, name in ipairs({"io", "package", "debug", "dofile", "loadfile"}) do
                if _G[name] ~= nil or load("return " .. name)() ~= nil then print("present via _G: " .. name) end
            end
            local keys = {}
            for k in pairs(os) do keys[#keys + 1] = k end
            table.sort(keys)
            print("os: " .. table.concat(keys, " "))
            """)
        XCTAssertEqual(output, "os: clock date time\n")
        assertHostHealthy()
    }

    /// A.1: the three os functions that remain still work.
    func testA1_ClockTimeAndDateWork() {
        let output = expectSuccess("""
            assert(type(os.clock()) == "number" and os.clock() >= 0)
            assert(math.type(os.time()) == "integer" and os.time() > 1.6e9)
            assert(os.time({year = 2024, month = 1, day = 1, hour = 12}) > 0)
            assert(os.date("!%Y-%m-%d", 0) == "1970-01-01")
            assert(os.date("*t").year >= 2024)
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
    }

    /// A.1: require finds neither the standard C libraries nor C modules, even one lying in a module root.
    func testA1_RequireLoadsNoLibrariesAndNoCModules() throws {
        let root = try temporaryFolder()
        try Data([0x7f, 0x45, 0x4c, 0x46]).write(to: URL(fileURLWithPath: root + "/cmod.so"))
        try "return {answer = 42}".write(toFile: root + "/plain.lua", atomically: true, encoding: .utf8)
        let files = FileAccess(moduleRoots: [root])
        let output = expectSuccess("""
            for _, name in ipairs({"io", "os", "debug", "package", "ffi", "cmod", "socket.core", "lfs"}) do
                local ok, message = pcall(require, name)
                if ok then print("loaded " .. name) end
                if not tostring(message):find("not found", 1, true) then print(name .. ": " .. tostring(message)) end
            end
            assert(require("kiri") == kiri)
            assert(require("plain").answer == 42)
            print("ok")
            """, files: files)
        XCTAssertEqual(output, "ok\n")
        expectFailure("require 'io'", [.error], ["case.lua:1:", "module 'io' not found"], files: files)
        expectFailure("require '../etc/passwd'", [.error], ["invalid module name"], files: files)
    }

    /// A.2: string.dump is gone from the sandbox and from the real string table (reached through "").
    func testA2_StringDumpIsGone() {
        let output = expectSuccess("""
            assert(string.dump == nil and ("").dump == nil and getmetatable("").__index.dump == nil)
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
        expectFailure("local f = function() end\nload(string.dump(f))", [.error],
                      ["case.lua:2:", "attempt to call a nil value (field 'dump')"])
        expectFailure(#"local f = function() end; return ("").dump(f)"#, [.error], ["attempt to call a nil value"])
    }

    /// A.2: binary chunks are refused by load, whatever mode is asked, and as a script.
    func testA2_BinaryChunksAreRefused() {
        let output = expectSuccess(#"""
            local chunk, message = load("\27Lua\84\0\25\147\13\10\26\10\4\8\8xV\0\0")
            assert(chunk == nil and message:find("attempt to load a binary chunk", 1, true), message)
            local pieces = {"\27Lua", "\84\0"}
            chunk, message = load(function() return table.remove(pieces, 1) end)
            assert(chunk == nil and message:find("binary chunk", 1, true), message)
            for _, mode in ipairs({"b", "bt", "tb"}) do
                local ok, err = pcall(load, "return 1", "x", mode)
                assert(not ok and err:find("only text chunks", 1, true), err)
            end
            assert(load("return 1", "x", "t")() == 1)
            print("ok")
            """#)
        XCTAssertEqual(output, "ok\n")
        expectFailure(#"local f = load("x = 1", "chunk", "b")"#, [.error], ["case.lua:1:", "bad argument #3 to 'load'", "only text chunks"])
        expectFailure("\u{1b}Lua\u{54}\u{00}garbage", [.error], ["binary chunk"])
    }

    /// A.3: code loaded at run time sees the sandbox environment, never the host's globals.
    func testA3_LoadRunsInTheSandbox() {
        let output = expectSuccess("""
            marker = 42
            local g = load("return _G")()
            assert(g == _G and g.marker == 42, "load sees another _G")
            assert(g.io == nil and g.package == nil and g.debug == nil and g.os.execute == nil)
            assert(load("return _ENV")() == _G)
            assert(load("return io")() == nil and load("return require")() == require)
            assert(load("marker = 7")() == nil and marker == 7)
            -- an explicit environment is honoured, and still holds nothing of the host
            assert(load("return print", "x", "t", {})() == nil)
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
        expectFailure(#"load("return io.open('/etc/passwd')")()"#, [.error], ["attempt to index a nil value (global 'io')"])
    }

    /// A.4: the string metatable and the string library cannot be changed.
    func testA4_StringMetatableIsReadOnly() {
        expectFailure("getmetatable('').__index.upper = function() return 'pwned' end", [.error],
                      ["case.lua:1:", "read-only", "upper"])
        expectFailure("string.upper = function() return 'pwned' end", [.error],
                      ["case.lua:1:", "attempt to modify read-only table 'string' (field 'upper')"])
        expectFailure("getmetatable('').__index = {}", [.error], ["read-only"])
        let output = expectSuccess("""
            local attempts = {
                function() getmetatable("").__index.upper = print end,
                function() getmetatable("").__index = {} end,
                function() getmetatable("").__newindex = print end,
                function() string.upper = print end,
                function() string.format = nil end,
                function() setmetatable(string, {}) end,
                function() setmetatable(getmetatable(""), nil) end,
            }
            for i, attempt in ipairs(attempts) do
                assert(not pcall(attempt), "attempt " .. i .. " succeeded")
            end
            assert(("abc"):upper() == "ABC" and string.upper("x") == "X" and string.format("%d", 3) == "3")
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
    }

    /// A.4: the kiri API tables, their sub-tables and the other libraries are read-only; rawset is absent.
    func testA4_KiriTablesAreReadOnly() {
        expectFailure("kiri.zeros = function() end", [.error],
                      ["case.lua:1:", "attempt to modify read-only table 'kiri' (field 'zeros')"])
        expectFailure("kiri.xyz = 1", [.error], ["read-only table 'kiri' (field 'xyz')"])
        expectFailure("kiri.samplers = {}", [.error], ["read-only"])
        expectFailure("kiri.samplers.euler = function() end", [.error],
                      ["case.lua:1:", "attempt to modify kiri.samplers.euler (use kiri.register)"])
        expectFailure("setmetatable(kiri, nil)", [.error], ["cannot change a protected metatable"])
        expectFailure("rawset(kiri, 'zeros', print)", [.error], ["attempt to call a nil value (global 'rawset')"])
        let output = expectSuccess("""
            assert(rawset == nil)
            assert(getmetatable(kiri) == false and getmetatable(kiri.zeros(1)) == false)
            assert(rawget(kiri, "zeros") == nil, "the proxy has no fields of its own")
            local attempts = {
                function() kiri.zeros = print end,
                function() kiri.xyz = 1 end,
                function() setmetatable(kiri, {}) end,
                function() table.insert = print end,
                function() math.pi = 3 end,
                function() coroutine.wrap = print end,
                function() os.clock = print end,
                function() utf8.char = print end,
                function() local t = kiri.zeros(2); t.add = print end,   -- Tensor methods stay put
            }
            for name, value in pairs(kiri) do                             -- every sub-table, e.g. kiri.samplers
                if type(value) == "table" then
                    attempts[#attempts + 1] = function() value.evil = print end
                    for key in pairs(value) do attempts[#attempts + 1] = function() value[key] = print end end
                end
            end
            for i, attempt in ipairs(attempts) do
                assert(not pcall(attempt), "attempt " .. i .. " succeeded")
            end
            assert(kiri.zeros(2):add(1):sum() == 2 and math.pi > 3.14 and type(table.insert) == "function")
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
    }

    /// A.5: one script's globals never reach another: every run has a fresh state.
    func testA5_GlobalsDoNotLeakBetweenRuns() {
        let first = expectSuccess("""
            kiri.register("sampler", "from_a", function() return "A" end)   -- the documented way in
            assert(kiri.samplers.from_a() == "A")
            secret = "from A"
            kiri_cache = {1, 2, 3}
            string = nil; print = nil; tostring = function() return "pwned" end
            local ok = pcall(function() getmetatable("").__index.sub = nil end)
            assert(not ok)
            """)
        XCTAssertEqual(first, "")
        let second = expectSuccess("""
            assert(secret == nil and kiri_cache == nil, "globals leaked from the previous run")
            assert(not pcall(function() return kiri.samplers.from_a end), "a registration leaked")
            assert(type(string) == "table" and type(print) == "function" and tostring(1) == "1")
            assert(("abc"):sub(2) == "bc")
            print("ok")
            """)
        XCTAssertEqual(second, "ok\n")
        assertHostHealthy()
    }

    /// A.6: collectgarbage answers "count" and nothing else, including its default ("collect").
    func testA6_CollectGarbageOnlyCounts() {
        expectFailure("collectgarbage()", [.error], ["case.lua:1:", "only \"count\" is allowed"])
        expectFailure("collectgarbage('stop')", [.error], ["only \"count\" is allowed", "stop"])
        expectFailure("collectgarbage('collect')", [.error], ["only \"count\" is allowed", "collect"])
        let output = expectSuccess("""
            for _, option in ipairs({"step", "restart", "incremental", "generational", "isrunning", "setpause", "setstepmul"}) do
                assert(not pcall(collectgarbage, option), option)
            end
            local kilobytes = collectgarbage("count")
            assert(type(kilobytes) == "number" and kilobytes > 0)
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
    }

    /// A.7: writes go under the output folder, creating sub-folders.
    func testA7_WritesStayInTheOutputFolder() throws {
        let out = try temporaryFolder()
        let files = FileAccess(outputDirectory: out)
        let output = expectSuccess("""
            kiri.write_text("a/b.txt", "hello from the sandbox")
            kiri.write_text("./c.txt", "second")
            print(kiri.read_text(\(lua(out + "/a/b.txt"))))
            """, files: files)
        XCTAssertEqual(output, "hello from the sandbox\n")
        XCTAssertEqual(try String(contentsOfFile: out + "/a/b.txt", encoding: .utf8), "hello from the sandbox")
        XCTAssertEqual(try String(contentsOfFile: out + "/c.txt", encoding: .utf8), "second")
    }

    /// A.7: `..` and absolute paths are refused, and nothing is written outside.
    func testA7_DotDotAndAbsolutePathsAreRefused() throws {
        let base = try temporaryFolder()
        let out = base + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let files = FileAccess(outputDirectory: out)
        let outside = base + "/outside.txt"
        for path in ["../outside.txt", "a/../../outside.txt", "./../outside.txt", outside, "/tmp/kiri-sandbox-escape.txt", ""] {
            expectFailure("kiri.write_text(\(lua(path)), 'pwned')", [.error], ["case.lua:1:", "cannot write"], files: files)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: outside))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/kiri-sandbox-escape.txt"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: base), ["out"])
    }

    /// A.7: a symlinked folder inside the output folder cannot lead out, not even to create folders.
    func testA7_SymlinkedParentFolderIsRefused() throws {
        let base = try temporaryFolder()
        let out = base + "/out", outside = base + "/outside"
        for folder in [out, outside] { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        try FileManager.default.createSymbolicLink(atPath: out + "/link", withDestinationPath: outside)
        let files = FileAccess(outputDirectory: out)
        expectFailure("kiri.write_text('link/x.txt', 'pwned')", [.error], ["cannot write 'link/x.txt'", "leads out"], files: files)
        expectFailure("kiri.write_text('link/sub/deeper/x.txt', 'pwned')", [.error], ["cannot write", "leads out"], files: files)
        expectFailure("kiri.write_text('ok/../link/x.txt', 'pwned')", [.error], ["cannot write"], files: files)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outside), [], "something was made outside")
    }

    /// A.7: a symlink as the file itself is not followed, whether its target exists or not. By default the link
    /// is kept and the new file takes the next free name (issue 14, 7: nothing is overwritten); with `overwrite`
    /// the new file replaces the link.
    func testA7_SymlinkedFileIsReplacedNotFollowed() throws {
        for overwrite in [false, true] {
            let base = try temporaryFolder()
            let out = base + "/out", outside = base + "/outside"
            for folder in [out, outside] { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
            try "original".write(toFile: outside + "/target.txt", atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: out + "/existing.txt", withDestinationPath: outside + "/target.txt")
            try FileManager.default.createSymbolicLink(atPath: out + "/dangling.txt", withDestinationPath: outside + "/new.txt")
            let files = FileAccess(outputDirectory: out, overwrite: overwrite)
            let printed = expectSuccess("print(kiri.write_text('existing.txt', 'mine'), kiri.write_text('dangling.txt', 'mine'))",
                                        files: files)
            XCTAssertEqual(printed, overwrite ? "existing.txt\tdangling.txt\n" : "existing-2.txt\tdangling-2.txt\n")
            XCTAssertEqual(try String(contentsOfFile: outside + "/target.txt", encoding: .utf8), "original")
            XCTAssertFalse(FileManager.default.fileExists(atPath: outside + "/new.txt"))
            for name in ["existing", "dangling"] {
                let written = out + "/" + name + (overwrite ? ".txt" : "-2.txt")
                XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: written), written)
                XCTAssertEqual(try String(contentsOfFile: written, encoding: .utf8), "mine")
                XCTAssertEqual(overwrite, (try? FileManager.default.destinationOfSymbolicLink(atPath: out + "/\(name).txt")) == nil)
            }
        }
    }

    /// A.7: reads only from the read roots (and the output folder); `..` and symlinks cannot leave them.
    func testA7_ReadsAreConfinedToTheRoots() throws {
        let base = try temporaryFolder()
        let root = base + "/recipes", outside = base + "/private"
        for folder in [root, outside] { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        try "allowed".write(toFile: root + "/inside.txt", atomically: true, encoding: .utf8)
        try "secret".write(toFile: outside + "/secret.txt", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: root + "/link.txt", withDestinationPath: outside + "/secret.txt")
        try FileManager.default.createSymbolicLink(atPath: root + "/folder", withDestinationPath: outside)
        try FileManager.default.createSymbolicLink(atPath: root + "/escape.lua", withDestinationPath: outside + "/secret.txt")
        let files = FileAccess(readRoots: [root], moduleRoots: [root])
        XCTAssertEqual(expectSuccess("print(kiri.read_text(\(lua(root + "/inside.txt"))))", files: files), "allowed\n")
        for path in [outside + "/secret.txt", root + "/../private/secret.txt", root + "/link.txt",
                     root + "/folder/secret.txt", "/etc/passwd"] {
            let outcome = expectFailure("print(kiri.read_text(\(lua(path))))", [.error], ["cannot read", "outside the folders"],
                                        files: files)
            XCTAssertFalse(outcome.output.contains("secret"))
        }
        expectFailure("return require('escape')", [.error], ["module 'escape' not found"], files: files)
    }

    // MARK: - B. Resources

    /// B.8: an endless loop stops at the deadline.
    func testB8_EndlessLoopStopsAtTheDeadline() {
        let outcome = expectFailure("while true do end", [.timeout], ["time limit exceeded"], timeout: 0.5)
        XCTAssertGreaterThanOrEqual(outcome.seconds, 0.45)
        XCTAssertLessThan(outcome.seconds, 1.5)
    }

    /// B.8: the clock starts with the script, not with setting up the runtime, so even a tiny limit
    /// gives a working runtime whose script is then stopped.
    func testB8_TheClockStartsWithTheScript() {
        for _ in 0..<20 {
            let outcome = run("while true do end", timeout: 1e-6)
            XCTAssertEqual(outcome.failure?.kind, .timeout, outcome.failure?.message ?? "no failure")
        }
        assertHostHealthy()
    }

    /// B.9: pcall cannot swallow the stop: once tripped, it trips again at once, so the script
    /// cannot even print what it caught.
    func testB9_TimeoutIsSticky() {
        let outcome = expectFailure("""
            while 1 do
                local ok, message = pcall(function() while true do end end)
                print("caught", message)
            end
            """, [.timeout], ["time limit exceeded"], timeout: 0.5)
        XCTAssertLessThan(outcome.seconds, 1.5)
        XCTAssertEqual(outcome.output, "")
        let nested = expectFailure("""
            local function busy() while true do end end
            while true do
                pcall(pcall, xpcall, busy, busy)
                pcall(error, "again")
            end
            """, [.timeout], ["time limit exceeded"], timeout: 0.5)
        XCTAssertLessThan(nested.seconds, 1.5)
    }

    /// B.10: busy loops are stopped wherever they hide.
    func testB10_BusyLoopInCoroutineStops() {
        let outcome = expectFailure("""
            local co = coroutine.wrap(function() while true do end end)
            while true do pcall(co) end
            """, [.timeout], ["time limit exceeded"], timeout: 0.3)
        XCTAssertLessThan(outcome.seconds, 1.3)
        let resumed = expectFailure("""
            local co = coroutine.create(function() while true do coroutine.yield() end end)
            while true do coroutine.resume(co) end
            """, [.timeout], ["time limit exceeded"], timeout: 0.3)
        XCTAssertLessThan(resumed.seconds, 1.3)
    }

    /// B.10: a message handler. The limit is raised from a hook, and Lua runs the handler for that
    /// error with hooks still off, so a handler looping then would never be stopped: the sandbox's
    /// xpcall skips the script's handler once the limit has tripped.
    func testB10_BusyLoopInXpcallHandlerStops() {
        for source in [
            "while true do xpcall(error, function() while true do end end) end",
            "xpcall(function() while true do end end, function() while true do end end)",
            "xpcall(function() while true do end end, function(m) print('handled', m) return m end)",
        ] {
            let outcome = expectFailure(source, [.timeout], ["time limit exceeded"], timeout: 0.3)
            XCTAssertLessThan(outcome.seconds, 1.3, source)
            XCTAssertEqual(outcome.output, "", source)
        }
    }

    /// B.10: __close handlers of a coroutine the limit stopped. That coroutine is left with hooks off,
    /// so closing it (coroutine.close, or the close coroutine.wrap does on error) would run a looping
    /// handler forever: once the limit has tripped, nothing more is closed.
    func testB10_BusyCloseHandlerInStoppedCoroutineStops() {
        for source in [
            """
            local co = coroutine.wrap(function()
                local guard <close> = setmetatable({}, {__close = function() while true do end end})
                while true do end
            end)
            co()
            """,
            """
            local co = coroutine.create(function()
                local guard <close> = setmetatable({}, {__close = function() while true do end end})
                while true do end
            end)
            coroutine.resume(co)
            coroutine.close(co)
            """,
            """
            local co = coroutine.create(function()
                local guard <close> = setmetatable({}, {__close = function() while true do end end})
                while true do end
            end)
            local outer <close> = setmetatable({}, {__close = function() coroutine.close(co) end})
            coroutine.resume(co)
            """,
        ] {
            let outcome = expectFailure(source, [.timeout], ["time limit exceeded"], timeout: 0.3)
            XCTAssertLessThan(outcome.seconds, 1.3, source)
        }
    }

    /// B.10: the sandbox's xpcall and coroutine.wrap keep Lua's meaning.
    func testB10_XpcallAndWrapKeepTheirMeaning() {
        let output = expectSuccess("""
            assert(select(2, xpcall(error, function(m) return "handled: " .. m end, "x")) == "handled: x")
            assert(select("#", xpcall(function(...) return ... end, print, 1, 2, 3)) == 4)
            local closed = false
            local failing = coroutine.wrap(function()
                local guard <close> = setmetatable({}, {__close = function() closed = true end})
                error("boom")
            end)
            local ok, message = pcall(failing)
            assert(not ok and message == "case.lua:6: boom" and closed, message)
            local counter = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
            assert(counter(1) == 2 and counter(5) == 10)
            ok, message = pcall(counter)
            assert(not ok and message:find("cannot resume dead coroutine", 1, true), message)
            ok, message = pcall(coroutine.wrap, 42)
            assert(not ok and message:find("bad argument #1 to 'wrap'", 1, true), message)
            local tagged = setmetatable({}, {__tostring = function() return "tagged" end})
            ok, message = pcall(coroutine.wrap(function() error(tagged) end))
            assert(not ok and message == tagged)
            local co = coroutine.create(function() coroutine.yield() end)
            coroutine.resume(co)
            assert(coroutine.close(co) and coroutine.status(co) == "dead")
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
    }

    func testB10_BusyLoopInIndexMetamethodStops() {
        let outcome = expectFailure("""
            local t = setmetatable({}, {__index = function() while true do end end})
            while true do pcall(function() return t.x end) end
            """, [.timeout], ["time limit exceeded"], timeout: 0.3)
        XCTAssertLessThan(outcome.seconds, 1.3)
    }

    func testB10_BusyLoopInCloseHandlerStops() {
        let outcome = expectFailure("""
            while true do
                pcall(function()
                    local guard <close> = setmetatable({}, {__close = function() while true do end end})
                end)
            end
            """, [.timeout], ["time limit exceeded"], timeout: 0.3)
        XCTAssertLessThan(outcome.seconds, 1.3)
    }

    /// B.10: Lua callbacks run by C library functions (sort comparators, gsub replacements, __tostring).
    func testB10_BusyLoopInLibraryCallbacksStops() {
        for source in [
            "table.sort({3, 2, 1}, function(a, b) while true do end end)",
            "string.gsub('abc', '%w', function() while true do end end)",
            "tostring(setmetatable({}, {__tostring = function() while true do end end}))",
            "error(setmetatable({}, {__tostring = function() while true do end end}))",
        ] {
            let outcome = expectFailure(source, [.timeout], [], timeout: 0.3)
            XCTAssertLessThan(outcome.seconds, 1.3, source)
        }
    }

    /// B.10: finalizers run with hooks off in Lua 5.4, so no deadline could stop one: scripts cannot
    /// set __gc at all (as in Luau), and setting it later does not mark the object either.
    func testB10_GcMetamethodsAreRefused() {
        expectFailure("setmetatable({}, {__gc = function() while true do end end})", [.error],
                      ["case.lua:1:", "bad argument #2 to 'setmetatable' (__gc metamethods are not allowed in scripts)"])
        let outcome = run("""
            local late = {}
            local keep = setmetatable({}, late)
            late.__gc = function() print("finalizer ran") while true do end end
            local inherited = setmetatable({}, setmetatable({}, {__index = {__gc = function() print("finalizer ran") end}}))
            keep, inherited = nil, nil
            for i = 1, 1e5 do local garbage = {} end
            print("done")
            """, timeout: 1)
        XCTAssertNil(outcome.failure)
        XCTAssertEqual(outcome.output, "done\n", "a finalizer ran (also checked at close)")
        XCTAssertLessThan(outcome.seconds, 1)
        assertHostHealthy()
    }

    /// B.11: string.rep is capped, also for numbers and numeric strings, and an empty result returns at once.
    func testB11_RepIsCapped() {
        let outcome = expectFailure(#"local s = ("x"):rep(2^31)"#, [.error],
                                    ["case.lua:1:", "bad argument #2 to 'rep'", "exceeds the 67108864-byte cap"])
        XCTAssertLessThan(outcome.seconds, 0.5)
        let output = expectSuccess(#"""
            local function refused(...)
                local start = os.clock()
                local ok, message = pcall(string.rep, ...)
                assert(not ok and message:find("cap", 1, true), tostring(message))
                assert(os.clock() - start < 0.2)
            end
            refused("x", 2^31)
            refused(7, 2^31)                   -- numbers are converted, as by the C function
            refused("x", "2147483648")         -- and so are numeric strings
            refused("ab", 2^30, ",")
            refused("", 2^40, "x")
            -- Lua's rep would loop 2^62 times to build an empty string
            local start = os.clock()
            assert(("").rep("", 2^62) == "" and string.rep("", math.maxinteger, "") == "")
            assert(os.clock() - start < 0.2)
            assert(("ab"):rep(3, "-") == "ab-ab-ab" and #("x"):rep(1e6) == 1e6 and ("x"):rep(0) == "")
            print("ok")
            """#)
        XCTAssertEqual(output, "ok\n")
    }

    /// B.11: backtracking patterns whose worst case is astronomical are refused before they run.
    func testB11_PathologicalPatternsAreRefused() {
        let outcome = expectFailure(#"local i = string.find(("a"):rep(5e4), ("a*"):rep(10) .. "b")"#, [.error],
                                    ["case.lua:1:", "bad argument #2 to 'find'", "pattern too costly"])
        XCTAssertLessThan(outcome.seconds, 0.5)
        let output = expectSuccess(#"""
            local function refused(f, ...)
                local start = os.clock()
                local ok, message = pcall(f, ...)
                assert(not ok and message:find("pattern too costly", 1, true), tostring(message))
                assert(os.clock() - start < 0.2, "slow refusal")
            end
            local a = ("a"):rep(5e4)
            refused(string.find, a, ("a*"):rep(10) .. "b")
            refused(string.match, a, ("a-"):rep(4) .. "b")
            refused(string.gsub, a, "a*a*a*b", "")
            refused(string.gmatch, a, "^a*a*b")                           -- '^' is no anchor for gmatch
            refused(string.find, ("a"):rep(40), ("a?"):rep(40) .. ("a"):rep(40))   -- 2^40 paths
            refused(string.find, ("("):rep(3e5), "%b()")                  -- each start scans to the end
            refused(string.match, ("a"):rep(1e5), "(a*)%1%1%1b")          -- back-references scan too
            local long = ("a"):rep(1 << 24)
            refused(string.find, long, ("a"):rep(1 << 20) .. "b")           -- no specials: a memcmp at every start
            refused(string.find, long, ("a"):rep(1 << 20) .. "b", 1, true)  -- plain search: the same
            print("ok")
            """#)
        XCTAssertEqual(output, "ok\n")
    }

    /// B.11: ordinary string matching is unaffected.
    func testB11_OrdinaryPatternsStillWork() {
        let output = expectSuccess(#"""
            assert(("hello world"):find("wor") == 7)
            assert(("hello world"):gsub("o", "0") == "hell0 w0rld")
            local first, second = ("key = value"):match("^(%w+)%s*=%s*(%w+)$")
            assert(first == "key" and second == "value")
            local count = 0
            for word in ("one two three"):gmatch("%a+") do count = count + 1 end
            assert(count == 3)
            assert(("a.b"):find(".", 1, true) == 2 and ("(x)"):match("%b()") == "(x)")
            assert(("THE (quick) fox"):find("%f[%a]%a+%f[%A]") == 1)
            local big = ("line\n"):rep(2e5)
            assert(select(2, big:gsub("\n", "")) == 2e5)
            assert(big:find("line", 1, true) == 1 and #big:match("^(.-)\n") == 4)
            print("ok")
            """#)
        XCTAssertEqual(output, "ok\n")
    }

    /// B.11: table functions that shift elements in C are bounded, even when a __len or the border
    /// of a sparse table claims 2^50 elements.
    func testB11_TableShiftsAreBounded() {
        let outcome = expectFailure("table.move({}, 1, 1 << 53, 1)", [.error],
                                    ["case.lua:1:", "bad argument #3 to 'move'", "the limit is"])
        XCTAssertLessThan(outcome.seconds, 0.5)
        let output = expectSuccess(#"""
            local function refused(f, ...)
                local start = os.clock()
                local ok, message = pcall(f, ...)
                assert(not ok and message:find("the limit is", 1, true), tostring(message))
                assert(os.clock() - start < 0.2, "slow refusal")
            end
            -- a table with only hash keys 1, 2, 4, ..., 2^50 has the border 2^50
            local parts = {}
            for i = 1, 65 do parts[i] = "k" .. i .. " = 1" end
            local sparse = load("return {" .. table.concat(parts, ", ") .. "}")()
            for k = 0, 50 do sparse[1 << k] = true end
            assert(#sparse == 1 << 50)
            refused(table.insert, sparse, 1, "x")
            refused(table.remove, sparse, 1)
            local liar = setmetatable({}, {__len = function() return 2^50 end})
            refused(table.insert, liar, 1, "x")
            refused(table.remove, liar, 1)
            refused(table.move, {}, 1, math.maxinteger, 2)
            refused(table.move, {}, -2^53, 2^53, 1, {})
            -- a __len that answers small when asked first cannot answer large afterwards
            local asked = 0
            local fickle = setmetatable({}, {__len = function() asked = asked + 1; return asked == 1 and 2 or 2^50 end})
            table.insert(fickle, 1, "x")
            assert(asked == 1)
            -- ordinary uses
            local t = {1, 2, 3}
            table.insert(t, 1, 0); table.insert(t, 4)
            assert(table.concat(t, ",") == "0,1,2,3,4" and table.remove(t, 1) == 0 and table.remove(t) == 4)
            assert(table.concat(table.move({1, 2, 3}, 1, 3, 2), ",") == "1,1,2,3")
            print("ok")
            """#)
        XCTAssertEqual(output, "ok\n")
    }

    /// B.11: slow C calls that allocate as they go are bounded by the memory cap.
    func testB11_AllocatingCCallsStopAtTheMemoryCap() {
        let outcome = expectFailure(#"return string.pack("c2000000000", "")"#, [.memory], ["not enough memory"],
                                    memory: 64 << 20)
        XCTAssertLessThan(outcome.seconds, 1)
    }

    /// B.12: a table that grows without end stops at the cap.
    func testB12_TableBombStopsAtTheCap() {
        let outcome = expectFailure("local t = {} for i = 1, 1e12 do t[i] = i end", [.memory], ["not enough memory"],
                                    timeout: 10, memory: 64 << 20)
        XCTAssertLessThanOrEqual(outcome.peak, 64 << 20)
        XCTAssertLessThan(outcome.seconds, 3)
    }

    /// B.12: a string that doubles without end stops at the cap.
    func testB12_StringDoublingStopsAtTheCap() {
        let outcome = expectFailure("local s = 'x' while true do s = s .. s end", [.memory], ["not enough memory"],
                                    timeout: 10, memory: 64 << 20)
        XCTAssertLessThanOrEqual(outcome.peak, 64 << 20)
        XCTAssertLessThan(outcome.seconds, 3)
    }

    /// B.12: tensor bytes count against the same cap: a huge tensor is refused before it is allocated.
    func testB12_HugeTensorIsRefusedAtTheCap() {
        let outcome = expectFailure("local t = kiri.zeros({20000, 20000})", [.memory, .error], ["not enough memory"],
                                    memory: 256 << 20)
        XCTAssertLessThan(outcome.peak, 16 << 20, "the refused tensor was allocated")
    }

    /// B.12: tensors that are kept fill the cap; Lua's and the tensors' bytes share it.
    func testB12_KeptTensorsStopAtTheCap() {
        let outcome = expectFailure("""
            local keep = {}
            for i = 1, 1e6 do keep[i] = kiri.zeros({1024, 1024}) end
            """, [.memory, .error], ["not enough memory"], timeout: 10, memory: 256 << 20)
        XCTAssertLessThanOrEqual(outcome.peak, 256 << 20)
        XCTAssertGreaterThan(outcome.peak, 200 << 20, "the tensors did not count against the cap")
    }

    /// B.12: a memory error caught by pcall leaves the run usable once the garbage is gone.
    func testB12_CaughtMemoryErrorLeavesTheRunUsable() {
        let output = expectSuccess("""
            local ok, message = pcall(function()
                local t = {}
                while true do t[#t + 1] = ("x"):rep(1000) .. #t end
            end)
            print(ok, message)
            local after = {}
            for i = 1, 1e5 do after[i] = i end
            print(#after, kiri.ones({100, 100}):sum())
            """, timeout: 10, memory: 64 << 20)
        XCTAssertEqual(output, "false\tnot enough memory\n100000\t10000.0\n")
    }

    /// B.13: endless recursion is a "stack overflow" error, in Lua and through C (pcall, metamethods,
    /// coroutines), never a crash.
    func testB13_DeepRecursionIsAnError() {
        expectFailure("local function f() return f() + 1 end\nf()", [.error], ["case.lua:1:", "stack overflow"])
        let output = expectSuccess("""
            local function through(f)
                local ok, message = pcall(f)
                assert(not ok and tostring(message):find("overflow"), tostring(message))
            end
            through(function() local function f() return 1 + f() end return f() end)
            through(function() local function f() local _, message = pcall(f) error(message, 0) end return f() end)
            through(function()
                local t = setmetatable({}, {__index = function(t, k) return t[k] end})
                return t.x
            end)
            through(function() local function f() return coroutine.wrap(f)() end return f() end)
            through(function()
                local s = setmetatable({}, {__tostring = function(s) return tostring(s) end})
                return tostring(s)
            end)
            through(function() local function f() return (string.gsub("x", "x", f)) end return f() end)
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
    }

    /// B.13: deeply nested source is refused by the parser (as a string given to load, and as a script).
    func testB13_DeeplyNestedSourceIsAnError() {
        let output = expectSuccess(#"""
            local sources = {
                "return " .. ("("):rep(1e5) .. "1" .. (")"):rep(1e5),
                "return " .. ("{"):rep(1e5) .. ("}"):rep(1e5),
                "return " .. ("- "):rep(1e5) .. "1",
                "return " .. ("1 .. "):rep(1e5) .. "1",
                ("do "):rep(1e5) .. (" end"):rep(1e5),
                ("function f() "):rep(1e4) .. (" end"):rep(1e4),
            }
            for i, source in ipairs(sources) do
                local chunk, message = load(source)
                assert(chunk == nil and (message:find("overflow", 1, true) or message:find("levels", 1, true)),
                    i .. ": " .. tostring(message))
            end
            print("ok")
            """#)
        XCTAssertEqual(output, "ok\n")
        let nested = "return " + String(repeating: "(", count: 100_000) + "1" + String(repeating: ")", count: 100_000)
        expectFailure(nested, [.error], ["overflow"])
    }

    /// B.13: Lua 5.4.4 nests coroutine.close calls made from __close handlers without counting C
    /// levels (an upstream bug, fixed in 5.4.6), which overflowed the C stack and crashed the process.
    func testB13_NestedCoroutineCloseIsBounded() {
        let output = expectSuccess("""
            local co = false
            for i = 1, 20000 do
                local previous = co
                co = coroutine.create(function()
                    local guard <close> = setmetatable({}, {__close = function()
                        if previous then assert(coroutine.close(previous)) end
                    end})
                    coroutine.yield()
                end)
                assert(coroutine.resume(co))
            end
            local ok, message = coroutine.close(co)
            print(ok, message:match("coroutine%.close nested more than %d+ deep"))
            -- ordinary use
            local plain = coroutine.create(function() coroutine.yield(1) end)
            coroutine.resume(plain)
            print(coroutine.close(plain), coroutine.status(plain))
            """, timeout: 10, memory: 512 << 20)
        XCTAssertEqual(output, "false\tcoroutine.close nested more than 100 deep\ntrue\tdead\n")
        assertHostHealthy()
    }

    /// B.14: unpacking a huge range is an error.
    func testB14_UnpackIsBounded() {
        let outcome = expectFailure("return table.unpack({}, 1, 1e8)", [.error], ["too many results to unpack"])
        XCTAssertLessThan(outcome.seconds, 0.5)
        let output = expectSuccess("""
            for _, range in ipairs({{1, math.maxinteger}, {math.mininteger, math.maxinteger}, {-1e8, 1}}) do
                local ok, message = pcall(table.unpack, {}, range[1], range[2])
                assert(not ok and message:find("too many results", 1, true), message)
            end
            local ok, message = pcall(string.byte, ("x"):rep(2e6), 1, -1)
            assert(not ok and message:find("string slice too long", 1, true), message)
            ok, message = pcall(utf8.codepoint, ("x"):rep(2e6), 1, -1)
            assert(not ok and message:find("string slice too long", 1, true), message)
            assert(select("#", table.unpack({}, 1, 100)) == 100)
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
    }

    /// B.15: tensor sizes are validated before anything is allocated, and the error names the argument.
    func testB15_TensorSizesAreValidatedBeforeAllocating() {
        let cases: [(String, String)] = [
            ("kiri.zeros({100000, 100000})", "bad argument #1 to 'zeros' (shape [100000, 100000] exceeds"),
            ("kiri.zeros(100000, 100000)", "bad argument #1 to 'zeros' (shape [100000, 100000] exceeds"),
            ("kiri.zeros({-1})", "bad argument #1 to 'zeros' (size must be non-negative, got -1)"),
            ("kiri.zeros(-1)", "bad argument #1 to 'zeros' (size must be non-negative, got -1)"),
            ("kiri.zeros({0/0})", "bad argument #1 to 'zeros' (size must be an integer, got"),
            ("kiri.zeros(2, 0/0)", "bad argument #2 to 'zeros' (size must be an integer, got"),
            ("kiri.zeros({2^63})", "bad argument #1 to 'zeros' (size must be an integer, got 9.223372036854776e+18)"),
            ("kiri.zeros({'12abc'})", "bad argument #1 to 'zeros' (size must be an integer, got string)"),
            ("kiri.zeros('12abc')", "bad argument #1 to 'zeros' (size must be an integer, got string)"),
            ("kiri.zeros({math.maxinteger})", "bad argument #1 to 'zeros' (size 9223372036854775807 is too large)"),
            ("kiri.zeros({65536, 65536, 65536, 65536, 65536})", "bad argument #1 to 'zeros' (shape"),
            ("kiri.zeros({1, 1, 1, 1, 1, 1})", "bad argument #1 to 'zeros' (at most 5 sizes expected, got 6)"),
            ("kiri.ones({1/0})", "bad argument #1 to 'ones' (size must be an integer, got inf)"),
            ("kiri.full({-2}, 1)", "bad argument #1 to 'full' (size must be non-negative, got -2)"),
            ("kiri.randn({1e10}, 1)", "bad argument #1 to 'randn' (size 10000000000 is too large)"),
            ("kiri.linspace(0, 1, 1e12)", "bad argument #3 to 'linspace' (count must be between 0 and"),
            ("kiri.linspace(0, 1, -1)", "bad argument #3 to 'linspace' (count must be between 0 and"),
            ("kiri.arange(1e12)", "bad argument #1 to 'arange' (range has too many elements)"),
            ("kiri.zeros(1, 1):repeatTensor(100000, 100000)", "bad argument #1 to 'repeatTensor'"),
            ("kiri.zeros(1, 1):expand(100000, 100000)", "bad argument #1 to 'expand'"),
        ]
        for (expression, message) in cases {
            let outcome = expectFailure("local t = \(expression)", [.error], ["case.lua:1:", message], memory: 256 << 20)
            XCTAssertLessThan(outcome.peak, 8 << 20, "\(expression) allocated before failing")
        }
    }

    // MARK: - C. The Swift/Lua boundary

    /// C.16: errors raised (by C, with longjmp) for Swift callbacks leak nothing: 100,000 of them
    /// inside pcall leave the budget at its baseline after close and the process's memory flat.
    func testC16_ErrorsFromSwiftCallbacksLeakNothing() {
        func script(_ iterations: Int) -> String {
            """
            local t, u = kiri.zeros({2, 3}), kiri.zeros({4})
            local row = {} for i = 1, 64 do row[i] = i end
            local ragged = {row, row, {1}}            -- fails after Swift allocated the tensor
            local failures = 0
            for i = 1, \(iterations) do
                local which = i % 6
                local ok
                if which == 0 then ok = pcall(kiri.add, t, nil)
                elseif which == 1 then ok = pcall(kiri.zeros, -1)
                elseif which == 2 then ok = pcall(t.add, t, u)
                elseif which == 3 then ok = pcall(kiri.tensor, ragged)
                elseif which == 4 then ok = pcall(t.reshape, t, 7)
                else ok = pcall(kiri.read_text, "/etc/passwd") end
                if not ok then failures = failures + 1 end
            end
            -- memory errors raised while C pushes a Swift result
            for i = 1, 3 do
                if not pcall(function() return kiri.zeros({4000, 1000}):totable() end) then failures = failures + 1 end
            end
            print(failures)
            """
        }
        XCTAssertEqual(expectSuccess(script(6000), timeout: 30, memory: 64 << 20), "6003\n")   // warm-up
        let before = residentBytes()
        let start = Date()
        XCTAssertEqual(expectSuccess(script(100_000), timeout: 30, memory: 64 << 20), "100003\n")
        let growth = residentBytes() - before
        print("C.16: 100,000 callback errors in \(String(format: "%.2f", Date().timeIntervalSince(start))) s, RSS growth \(growth / 1024) KiB")
        XCTAssertLessThan(growth, 8 << 20, "resident memory grew by \(growth) bytes")
        assertHostHealthy()
    }

    /// C.17: NaN, ±inf, 2^63, math.mininteger/maxinteger, -1 and "12abc" where an integer or a finite
    /// number is expected are errors (never a Swift trap).
    func testC17_BadNumbersAreErrors() {
        let cases: [(String, String)] = [
            ("t:select(1, 0/0)", "bad argument #2 to 'select' (number has no integer representation)"),
            ("t:select(1, 1/0)", "bad argument #2 to 'select' (number has no integer representation)"),
            ("t:select(1, -1)", "bad argument #2 to 'select' (index -1 out of range 1..2"),
            ("t:select(1, math.mininteger)", "bad argument #2 to 'select' (index -9223372036854775808 out of range"),
            ("t:select(1, '12abc')", "bad argument #2 to 'select' (integer expected, got string)"),
            ("t:narrow(1, 2^63, 1)", "bad argument #2 to 'narrow' (number has no integer representation)"),
            ("t:narrow(1, math.mininteger, 1)", "bad argument #2 to 'narrow' (index -9223372036854775808 out of range"),
            ("t:narrow(1, math.maxinteger, 1)", "bad argument #2 to 'narrow' (index 9223372036854775807 out of range"),
            ("t:narrow(1, 1, math.maxinteger)", "bad argument #3 to 'narrow' (length 9223372036854775807 out of range"),
            ("t:narrow(1, 1, math.mininteger)", "bad argument #3 to 'narrow' (length -9223372036854775808 out of range"),
            ("t:narrow(1, 1, -1)", "bad argument #3 to 'narrow' (length -1 out of range"),
            ("t[math.mininteger]", "index -9223372036854775808 out of range 1..2"),
            ("t[0/0]", "number has no integer representation"),
            ("kiri.zeros(0)[1]", "index 1 out of range 1..0"),
            ("kiri.zeros(0):select(1, 1)", "bad argument #2 to 'select' (index 1 out of range 1..0"),
            ("t:transpose(math.mininteger, 1)", "bad argument #1 to 'transpose' (dimension"),
            ("t:unsqueeze(math.maxinteger)", "bad argument #1 to 'unsqueeze' (dimension 9223372036854775807 out of range"),
            ("t:sum(math.mininteger)", "bad argument #1 to 'sum' (dimension"),
            ("t:size(math.mininteger)", "bad argument #1 to 'size' (dimension -9223372036854775808 out of range"),
            ("t:permute(math.maxinteger, 1)", "bad argument #1 to 'permute'"),
            ("kiri.cat({t, t}, math.mininteger)", "bad argument #2 to 'cat' (dimension"),
            ("kiri.stack({t}, math.maxinteger)", "bad argument #2 to 'stack' (dimension"),
            ("kiri.arange(1/0)", "bad argument #1 to 'arange' (finite bounds and a non-zero step expected)"),
            ("kiri.arange(0, 1, 0)", "bad argument #3 to 'arange' (finite bounds and a non-zero step expected)"),
            ("kiri.arange(0, 1, 5e-324)", "bad argument #1 to 'arange' (range has too many elements)"),
            ("kiri.linspace(0/0, 1, 3)", "bad argument #1 to 'linspace' (finite number expected"),
            ("kiri.full({2}, 0/0)", "bad argument #2 to 'full' (finite number expected"),
            ("kiri.randn({2}, 0/0)", "bad argument #2 to 'randn' (number has no integer representation)"),
            ("kiri.randn({2}, '12abc')", "bad argument #2 to 'randn' (integer expected, got string)"),
            ("kiri.manual_seed(2^63)", "bad argument #1 to 'manual_seed' (number has no integer representation)"),
            ("t:fill_(1/0)", "bad argument #1 to 'fill_' (finite number expected, got inf)"),
            ("t:pow(-1/0)", "bad argument #1 to 'pow' (finite number expected, got -inf)"),
            ("t:mul_(0/0)", "bad argument #1 to 'mul_' (finite number expected"),
            ("t + 1/0", "finite number expected, got inf"),
            ("t:axpy_(0/0, t)", "bad argument #1 to 'axpy_' (finite number expected"),
            ("t:lerp(t, 1/0)", "bad argument #2 to 'lerp' (finite number expected"),
            ("t:reshape(-1, -1)", "bad argument #1 to 'reshape' (only one size may be -1"),
            ("t:reshape(-2)", "bad argument #1 to 'reshape' (size must be non-negative, got -2)"),
        ]
        for (expression, message) in cases {
            expectFailure("local t = kiri.zeros({2, 3})\nlocal r = \(expression)", [.error], ["case.lua:2:", message])
        }
    }

    /// C.17: recursive and shared tables are refused or bounded, never followed forever or trusted
    /// to describe a sane size.
    func testC17_RecursiveAndSharedTablesAreRefused() {
        expectFailure("local t = {}; t[1] = t; kiri.tensor(t)", [.error],
                      ["case.lua:1:", "bad argument #1 to 'tensor' (table nested deeper than 5 levels)"])
        expectFailure("local t = {}; t[1] = t; kiri.zeros(t)", [.error], ["bad argument #1 to 'zeros' (size must be an integer, got table)"])
        expectFailure("local t = {}; t[1] = t; kiri.cat(t)", [.error], ["bad argument #1 to 'cat' (Tensor expected at index 1, got table)"])
        // Shared rows: four 100,000-entry tables describe 10^20 elements; 65,536 × 65,536 is 2^32.
        let outcome = expectFailure("""
            local a = {} for i = 1, 100000 do a[i] = 1 end
            local b = {} for i = 1, 100000 do b[i] = a end
            local c = {} for i = 1, 100000 do c[i] = b end
            local d = {} for i = 1, 100000 do d[i] = c end
            local ok, message = pcall(kiri.tensor, d)
            assert(not ok and message:find("exceeds", 1, true), message)
            local e = {} for i = 1, 65536 do e[i] = a end
            kiri.tensor({e[1], e[1]}) -- fine: 2 x 100000
            local f = {} for i = 1, 65536 do f[i] = {1, 2, 3, 4, 5, 6, 7, 8} end
            local g = {} for i = 1, 65536 do g[i] = f end
            kiri.tensor(g)
            """, [.error], ["case.lua:11:", "bad argument #1 to 'tensor' (shape [65536, 65536, 8] exceeds"], timeout: 5)
        XCTAssertLessThan(outcome.peak, 64 << 20, "memory was allocated for an impossible tensor")
        // Within the limits, a shared-row tensor is charged to the budget before it is filled.
        expectFailure("""
            local row = {} for i = 1, 8192 do row[i] = 1 end
            local rows = {} for i = 1, 8192 do rows[i] = row end
            kiri.tensor(rows)
            """, [.error, .memory], ["not enough memory"], memory: 128 << 20)
    }

    /// C.17: tables handed to the host are read raw: their metamethods never run, even ones that error.
    func testC17_MetamethodsAreNotRunByTheHost() {
        let output = expectSuccess("""
            local ran = false
            local trap = {
                __index = function() ran = true; error("metamethod ran") end,
                __len = function() ran = true; error("metamethod ran") end,
                __newindex = function() ran = true; error("metamethod ran") end,
            }
            local shape = setmetatable({}, trap)               -- raw: {} is a rank-0 shape
            assert(kiri.zeros(shape):dim() == 0)
            assert(kiri.zeros(setmetatable({2, 3}, trap)):numel() == 6)
            assert(kiri.tensor(setmetatable({1, 2}, trap)):numel() == 2)
            assert(kiri.tensor({setmetatable({1, 2}, trap), {3, 4}}):sum() == 10)
            assert(kiri.cat(setmetatable({kiri.ones(2)}, trap)):numel() == 2)
            local ok, message = pcall(kiri.zeros, setmetatable({2, "x"}, trap))
            assert(not ok and message:find("size must be an integer", 1, true), message)
            assert(not ran, "a metamethod ran")
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
        expectFailure("""
            local shape = setmetatable({}, {__index = function() error("boom") end})
            kiri.zeros({shape})
            """, [.error], ["case.lua:2:", "size must be an integer, got table"])
    }

    /// C.17: a yield across the host boundary is an error, not a corrupted stack.
    func testC17_YieldAcrossTheHostBoundaryIsAnError() {
        let output = expectSuccess(#"""
            local function yields(f)
                local co = coroutine.create(f)
                local ok, message = coroutine.resume(co)
                assert(not ok and message:find("attempt to yield across a C-call boundary", 1, true), tostring(message))
                assert(coroutine.status(co) == "dead")
            end
            yields(function() table.sort({3, 2, 1}, function(a, b) coroutine.yield() return a < b end) end)
            yields(function()
                local meta = {__lt = function() coroutine.yield() return true end}
                table.sort({setmetatable({}, meta), setmetatable({}, meta)})
            end)
            yields(function() string.gsub("abc", "%w", function() coroutine.yield() end) end)
            yields(function() error(select(2, load(function() coroutine.yield() end)), 0) end)   -- load returns it
            yields(function() tostring(setmetatable({}, {__tostring = function() coroutine.yield() end})) end)
            -- a handler that yields fails inside xpcall, which returns false
            local handler = coroutine.create(function() return xpcall(error, function() coroutine.yield() end) end)
            local resumed, result = coroutine.resume(handler)
            assert(resumed and result == false and coroutine.status(handler) == "dead")
            -- yields that Lua 5.4 supports still work (pcall, metamethods)
            local co = coroutine.wrap(function()
                pcall(coroutine.yield, 1)
                local t = setmetatable({}, {__index = function(_, k) return coroutine.yield(k) end})
                return t.x
            end)
            assert(co() == 1 and co() == "x" and co(5) == 5)
            print("ok")
            """#)
        XCTAssertEqual(output, "ok\n")
        expectFailure("coroutine.yield(1)", [.error], ["attempt to yield from outside a coroutine"])
    }

    /// C.17: a tensor freed early with <close> is refused afterwards, never read after free.
    func testC17_ClosedTensorIsRefused() {
        expectFailure("""
            local kept
            do
                local t <close> = kiri.ones({256, 256})
                kept = t
            end
            return kept:sum()
            """, [.error], ["case.lua:6:", "calling 'sum' on bad self (Tensor expected, got closed Tensor)"])
        expectFailure("""
            local kept
            do local t <close> = kiri.ones(4); kept = t end
            return kiri.add(kiri.ones(4), kept)
            """, [.error], ["bad argument #2 to 'add' (Tensor expected, got closed Tensor)"])
    }

    /// C.18: misuse of the tensor API names the argument and both shapes.
    func testC18_ErrorMessagesNameArgumentsAndShapes() {
        let outcome = expectFailure("local t = kiri.zeros({2, 3})\n\nkiri.add(t, nil)", [.error],
                                    ["case.lua:3: bad argument #2 to 'add' (Tensor expected, got nil)", "stack traceback:"])
        XCTAssertTrue(outcome.failure?.message.hasPrefix("case.lua:3: bad argument #2 to 'add'") ?? false)
        expectFailure("local t, u = kiri.zeros({2, 3}), kiri.zeros({4})\nreturn t:add(u)", [.error],
                      ["case.lua:2:", "bad argument #1 to 'add' (shapes [2, 3] and [4] cannot be broadcast)"])
        expectFailure("local t, u = kiri.zeros({2, 3}), kiri.zeros({4})\nreturn t + u", [.error],
                      ["case.lua:2:", "shapes [2, 3] and [4] cannot be broadcast"])
        expectFailure("local t = kiri.zeros({2, 3})\nreturn t:add('x')", [.error],
                      ["case.lua:2:", "bad argument #1 to 'add' (Tensor expected, got string)"])
        expectFailure("local t = kiri.zeros(3)\nreturn t[5]", [.error], ["case.lua:2:", "index 5 out of range 1..3"])
        expectFailure("local t = kiri.zeros({3, 2})\nreturn t:select(1, 5)", [.error],
                      ["case.lua:2:", "bad argument #2 to 'select' (index 5 out of range 1..3 for dimension 1 of size 3)"])
        expectFailure("local t = kiri.zeros({2, 3})\nreturn t:reshape(4, 2)", [.error],
                      ["case.lua:2:", "bad argument #1 to 'reshape' (cannot reshape [2, 3] (6 elements) to [4, 2] (8 elements))"])
        expectFailure("local t = kiri.zeros({2, 3})\nreturn t:matmul(kiri.zeros({2, 3}))", [.error],
                      ["case.lua:2:", "shapes [2, 3] and [2, 3] cannot be multiplied"])
    }

    /// C.19: a NaN or inf appearing mid-sampling is reported with its step and sigma.
    func testC19_NonFiniteValuesMidSamplingAreReported() throws {
        // The model breaks below sigma 5: the first step that sees it is step 4, at sigma 4.
        for sampler in ["euler", "heun", "lms", "dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde", "unipc", "ipndm"] {
            let failure = luaError("""
            local function model(x, sigma) return sigma < 5 and (x - x) / (x - x) or x * 0.5 end
            return kiri.samplers.\(sampler)(model, kiri.ones({2, 2}), {10, 8, 6, 4, 2, 0}, {seed = 1})
            """)
            XCTAssertTrue(failure?.message.contains("the model returned NaN or inf at step 4 (sigma 4)") ?? false,
                          "\(sampler): \(failure?.message ?? "no error")")
        }
        let infinite = luaError("""
        return kiri.samplers.euler(function(x, sigma) return x / 0 end, kiri.ones({3}), {2, 1, 0}, {})
        """)
        XCTAssertTrue(infinite?.message.contains("the model returned NaN or inf at step 1 (sigma 2)") ?? false,
                      infinite?.message ?? "no error")
        assertHostHealthy()
    }

    // MARK: - D. Lifecycle

    /// D.20: 10,000 runs in one process, successful, erroring, timed out and memory-capped: every
    /// budget returns to its baseline and the process's memory stays flat.
    func testD20_TenThousandRunsReturnToBaseline() {
        let succeeding = """
            local x = kiri.randn({16, 16}, 7)
            local y = (x * x):sum() + #("x"):rep(10)
            local t = {} for i = 1, 100 do t[i] = tostring(i) end
            print(string.format("%d", #table.concat(t)))
            """
        let erroring = "local t = kiri.zeros({2, 3})\nreturn t + kiri.zeros({4})"
        let luaError = "local t = {}\nreturn t.x.y"
        let memoryBomb = "local s = 'x' while true do s = s .. s end"
        let busy = "while true do end"
        var counts: [ScriptFailure.Kind?: Int] = [:]
        var lastOutput = ""
        func oneRun(_ i: Int) {
            let source: String, timeout: Double, memory: Int
            switch i % 10 {
            case 0...5: (source, timeout, memory) = (succeeding, 5, 32 << 20)
            case 6: (source, timeout, memory) = (erroring, 5, 32 << 20)
            case 7: (source, timeout, memory) = (luaError, 5, 32 << 20)
            case 8: (source, timeout, memory) = (memoryBomb, 5, 2 << 20)
            default: (source, timeout, memory) = i % 100 == 9 ? (busy, 0.001, 32 << 20) : (succeeding, 5, 32 << 20)
            }
            let outcome = run(source, timeout: timeout, memory: memory)
            XCTAssertEqual(outcome.usedAfterClose, 0, "run \(i): \(outcome.usedAfterClose) bytes not returned")
            counts[outcome.failure?.kind, default: 0] += 1
            if outcome.failure == nil { lastOutput = outcome.output }
        }
        for i in 0..<200 { oneRun(i) }   // warm-up: caches, allocator arenas, lazily loaded code
        let before = residentBytes()
        let start = Date()
        counts = [:]
        for i in 0..<10_000 { oneRun(i) }
        let seconds = Date().timeIntervalSince(start)
        let growth = residentBytes() - before
        print("D.20: 10,000 runs in \(String(format: "%.2f", seconds)) s, RSS growth \(growth / 1024) KiB, outcomes \(counts)")
        XCTAssertEqual(lastOutput, "192\n")
        XCTAssertEqual(counts[nil], 6_900)
        XCTAssertEqual(counts[.error], 2_000)
        XCTAssertEqual(counts[.memory], 1_000)
        XCTAssertEqual(counts[.timeout], 100)
        XCTAssertLessThan(growth, 20 << 20, "resident memory grew by \(growth) bytes")
        assertHostHealthy()
    }

    /// D.21: finalizer errors cannot flood the log, because scripts cannot have finalizers or warn.
    func testD21_ScriptsCannotReachTheWarningPath() {
        let output = expectSuccess("""
            assert(warn == nil)
            for _, meta in ipairs({{__gc = true}, {__gc = false}, {__gc = error}, {__gc = function() error("x") end}}) do
                local ok, message = pcall(setmetatable, {}, meta)
                assert(not ok and message:find("__gc metamethods are not allowed", 1, true), tostring(message))
            end
            print("ok")
            """)
        XCTAssertEqual(output, "ok\n")
        expectFailure("warn('@on'); warn('flood')", [.error], ["attempt to call a nil value (global 'warn')"])
        expectFailure("setmetatable({}, {__gc = true})", [.error], ["__gc metamethods are not allowed in scripts"])
    }
}
