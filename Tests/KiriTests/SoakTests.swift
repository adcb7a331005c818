import Foundation
import Kiri
import KiriLua
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// glibc's malloc_trim (not in the Glibc module): returns free heap pages, so RSS measures live memory.
@_silgen_name("malloc_trim") private func mallocTrim(_ pad: Int) -> Int32

/// Security case 20: a server runs recipe after recipe in one process, so 10,000 runs through `RecipeRunner.run`
/// must leave resident memory and open file descriptors where they were after warm-up. The runs mix the outcomes a
/// server sees: tensor maths, a sampler on the exact Gaussian denoiser, the bundled model loaded (a mapped
/// safetensors file) and closed, text written to the output folder, script errors, tensor shape errors, the time
/// limit and the memory cap (Lua tables, string doubling, and tensor bytes).
final class SoakTests: XCTestCase {
    struct Kind {
        let name: String
        let source: String
        var limits = SandboxLimits(timeout: 10, memory: 64 << 20)
        let expected: ScriptFailure.Kind?
    }

    /// One cycle of 20 slots, each slot taking its kinds in turn from cycle to cycle (so the time limit is hit by a
    /// plain loop and a loop in pcall alternately, the memory cap by each bomb in turn), and the bundled model every
    /// 200th run (a load costs as much as ten other runs). Each run gets the run index as its argument.
    static let cycle: [[Kind]] = {
        let maths = Kind(name: "maths", source: """
            local i = tonumber(...)
            local a = kiri.randn({32, 32}, i)
            local b = (a:matmul(a:transpose(1, 2)):abs() + 1):sqrt()
            local c <close> = kiri.cat({a, b}, 1)
            assert(c:shape()[1] == 64 and b:sum() == b:sum())
            """, expected: nil)
        let sampler = Kind(name: "sampler", source: """
            local i = tonumber(...)
            local model = kiri.models.gaussian{mean = 0.3, std = 0.5}
            local sigmas = kiri.schedules.karras{n = 8, sigma_min = 0.01, sigma_max = 10}
            local x = kiri.samplers.euler_ancestral(model, kiri.randn({64}, i) * 10, sigmas, {seed = i})
            assert(math.abs(x:mean()) < 10)
            """, expected: nil)
        let write = Kind(name: "write_text", source: """
            local i = tonumber(...)
            kiri.write_text(string.format("soak/%d.txt", i % 16), string.rep("line\\n", 64))
            """, expected: nil)
        let error = Kind(name: "error", source: "local t = setmetatable({}, {__index = function() error('boom') end}) return t.x",
                         expected: .error)
        let shapes = Kind(name: "shape error", source: "return kiri.zeros({2, 3}) + kiri.ones({4})", expected: .error)
        let busy = Kind(name: "timeout", source: "local n = 0 while true do n = n + 1 end",
                        limits: SandboxLimits(timeout: 0.01, memory: 64 << 20), expected: .timeout)
        let busyPcall = Kind(name: "timeout in pcall", source: "while true do pcall(function() while true do end end) end",
                             limits: SandboxLimits(timeout: 0.01, memory: 64 << 20), expected: .timeout)
        let table = Kind(name: "table bomb", source: "local t = {} for i = 1, 1e9 do t[i] = i end",
                         limits: SandboxLimits(timeout: 10, memory: 4 << 20), expected: .memory)
        let string = Kind(name: "string bomb", source: "local s = 'x' while true do s = s .. s end",
                          limits: SandboxLimits(timeout: 10, memory: 16 << 20), expected: .memory)
        let tensor = Kind(name: "tensor bomb", source: "local t = {} for i = 1, 100 do t[i] = kiri.zeros({1024, 1024}) end",
                          limits: SandboxLimits(timeout: 10, memory: 16 << 20), expected: nil)
        return [[maths], [sampler], [write], [error], [maths], [busy, busyPcall], [sampler], [maths], [write], [shapes],
                [maths], [table, string, tensor], [sampler], [maths], [write], [error], [maths], [shapes], [error], [maths]]
    }()

    static let model = Kind(name: "model", source: """
        local m <close> = kiri.models.default()
        assert(m.info.parameters > 0)
        """, expected: nil)

    static func kind(_ index: Int) -> Kind {
        if index % 200 == 199 { return model }
        let slot = cycle[index % cycle.count]
        return slot[index / cycle.count % slot.count]
    }

    func testTenThousandRunsKeepMemoryAndDescriptorsFlat() throws {
        let runs = ProcessInfo.processInfo.environment["KIRI_SOAK_RUNS"].flatMap(Int.init) ?? 10_000
        let warmUp = min(500, runs / 2)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-soak-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }

        var outcomes: [String: Int] = [:]
        var seconds: [String: Double] = [:]
        var baseline = (resident: 0, descriptors: 0)
        let start = Date()
        for index in 0..<runs {
            if index == warmUp { baseline = (Self.residentBytes(), Self.openDescriptors()) }
            let kind = Self.kind(index)
            let request = RunRequest(script: folder + "/soak.lua", arguments: [String(index)], limits: kind.limits,
                                     outputDirectory: folder + "/out", source: kind.source)
            var failure: ScriptFailure?
            let began = Date()
            defer { seconds[kind.name, default: 0] += Date().timeIntervalSince(began) }
            do {
                try RecipeRunner.run(request, output: { _ in })
            } catch let caught as ScriptFailure {
                failure = caught
            }
            outcomes[kind.name + ": " + (failure.map { "\($0.kind)" } ?? "ok"), default: 0] += 1
            // The tensor bomb fails with a tensor error at the cap, not Lua's "not enough memory", so either is fine.
            if kind.name != "tensor bomb", failure?.kind != kind.expected {
                XCTFail("run \(index) (\(kind.name)): expected \(kind.expected.map { "\($0)" } ?? "success"), got \(failure.map { "\($0.kind): \($0.message)" } ?? "success")")
                return
            }
            if kind.name == "tensor bomb" { XCTAssertNotNil(failure, "run \(index): 100 MiB of tensors under a 16 MiB cap") }
        }
        let total = Date().timeIntervalSince(start)
        let end = (resident: Self.residentBytes(), descriptors: Self.openDescriptors())

        print(String(format: "soak: %d runs in %.1f s (%.2f ms each); RSS %.1f MiB after %d runs, %.1f MiB at the end (%+.1f MiB); open descriptors %d → %d",
                     runs, total, total * 1000 / Double(runs), Double(baseline.resident) / 1048576, warmUp,
                     Double(end.resident) / 1048576, Double(end.resident - baseline.resident) / 1048576,
                     baseline.descriptors, end.descriptors))
        for (outcome, count) in outcomes.sorted(by: { $0.key < $1.key }) {
            let name = String(outcome.prefix { $0 != ":" })
            print(String(format: "  %5d  %@ (%.1f s in all)", count, outcome, seconds[name] ?? 0))
        }
        // A leak of 2 KiB per run would add 19 MiB over 9,500 runs; 16 MiB leaves room for malloc's arenas and
        // fragmentation (each run allocates and frees up to its 64 MiB cap).
        XCTAssertLessThan(end.resident - baseline.resident, 16 << 20, "RSS grew over \(runs - warmUp) runs")
        XCTAssertLessThanOrEqual(end.descriptors, baseline.descriptors, "file descriptors leaked")
    }

    /// Resident bytes after returning free heap pages: /proc/self/statm's second field, in pages.
    static func residentBytes() -> Int {
        _ = mallocTrim(0)
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let pages = statm.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return pages * sysconf(Int32(_SC_PAGESIZE))
    }

    static func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }
}
