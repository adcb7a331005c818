import Foundation
import KiriLua
import KiriTensor

/// Per-step cost of a sampler's Euler update on a 1×4×64×64 latent, from Lua (`x = x + d * dt`
/// and the fused `x:axpy_(dt, d)`) against the same update as a native Swift loop, in one run.
public enum EulerStepBenchmark {
    static let shape = [1, 4, 64, 64]

    static let script = """
    local repetitions, steps = tonumber(arg[1]), tonumber(arg[2])
    local x, d, dt = kiri.randn({1, 4, 64, 64}, 1), kiri.randn({1, 4, 64, 64}, 2), -1e-4
    local function median(form)
        local samples = {}
        for r = 1, repetitions do
            local start = kiri.clock()
            form(steps)
            samples[r] = (kiri.clock() - start) / steps * 1e6
        end
        table.sort(samples)
        return samples[(repetitions + 1) // 2]
    end
    local allocating = median(function(n) for _ = 1, n do x = x + d * dt end end)
    local fused = median(function(n) for _ = 1, n do x:axpy_(dt, d) end end)
    print(allocating, fused)
    """

    public static func run(repetitions: Int, steps: Int) throws -> String {
        var printed = ""
        let runtime = try LuaRuntime(output: { printed += $0 })
        defer { runtime.close() }
        try runtime.run(source: script, name: "euler_step_bench.lua", arguments: ["\(repetitions)", "\(steps)"])
        let lua = printed.split(whereSeparator: \.isWhitespace).compactMap { Double($0) }
        guard lua.count == 2 else { throw ScriptFailure(kind: .error, message: "benchmark printed '\(printed)'") }
        let native = nativeMedian(repetitions: repetitions, steps: steps)
        func row(_ name: String, _ micros: Double) -> String {
            String(format: "%-28@ %8.2f µs   %5.2f× native", name, micros, micros / native)
        }
        return [
            "Euler step on \(shape.map(String.init).joined(separator: "×")) (median of \(repetitions) × \(steps) steps)",
            String(format: "%-28@ %8.2f µs", "native Swift loop", native),
            row("Lua x = x + d * dt", lua[0]),
            row("Lua x:axpy_(dt, d)", lua[1]),
        ].joined(separator: "\n")
    }

    /// The baseline: x[i] += dt * d[i] in plain Swift, in place.
    static func nativeMedian(repetitions: Int, steps: Int) -> Double {
        let count = shape.reduce(1, *)
        let x = UnsafeMutablePointer<Float>.allocate(capacity: count), d = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { x.deallocate(); d.deallocate() }
        Philox.fillNormal(x, count: count, seed: 1)
        Philox.fillNormal(d, count: count, seed: 2)
        let dt: Float = -1e-4
        var samples: [Double] = []
        for _ in 0..<repetitions {
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<steps {
                for i in 0..<count { x[i] += dt * d[i] }
            }
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / Double(steps) / 1e3)
        }
        return samples.sorted()[(repetitions - 1) / 2]
    }
}
