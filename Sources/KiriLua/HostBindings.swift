import Foundation
import KiriTensor

/// Host services: files (always through FileAccess), module lookup for `require`, and a clock.
extension Bindings {
    static let host: [Binding] = [
        Binding(name: "findModule", tables: ["host"], tensorResults: 0) { call in
            let module = try call.runtime.files.findModule(try call.string(1))
            try call.push(module.source)
            try call.push("@" + module.path)
        },
        Binding(name: "read_text", tables: ["kiri"], tensorResults: 0) { call in
            let path = try call.string(1)
            let real = try call.runtime.files.resolveForReading(path)
            let attributes = try? FileManager.default.attributesOfItem(atPath: real)
            let size = (attributes?[.size] as? Int) ?? 0
            guard call.runtime.budget.reserve(size) else { throw ScriptError("not enough memory to read '\(path)'") }
            defer { call.runtime.budget.release(size) }
            do {
                try call.push(try String(contentsOfFile: real, encoding: .utf8))
            } catch let error as ScriptError {
                throw error
            } catch {
                throw ScriptError("cannot read '\(path)': \(FileAccess.reason(error))")
            }
        },
        Binding(name: "write_text", tables: ["kiri"], tensorResults: 0) { call in
            let path = try call.string(1), text = try call.string(2)
            try call.runtime.files.write(Data(text.utf8), to: path)
        },
        /// Monotonic wall-clock seconds, for timing inside recipes and benchmarks.
        Binding(name: "clock", tables: ["kiri"], tensorResults: 0) { call in
            var time = timespec()
            clock_gettime(CLOCK_MONOTONIC, &time)
            call.push(Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9)
        },
    ]
}
