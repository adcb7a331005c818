import Foundation
import KiriTensor
import LuaBridge

/// Host services: files (always through FileAccess), module lookup for `require`, and a clock.
extension Bindings {
    static let host: [Binding] = [
        Binding(name: "findModule", tables: ["host"], tensorResults: 0) { call in
            let runtime = call.runtime
            let module = try runtime.files.findModule(try call.string(1))
            runtime.loadedFiles.append(module.path)
            try call.push(module.source)
            try call.push("@" + module.chunkName)
        },
        /// (domain, name) → source and chunk name (`DOMAIN/NAME.lua`, no host folder) of the plugin file, or nothing
        /// if there is none.
        Binding(name: "findPlugin", tables: ["host"], tensorResults: 0) { call in
            let runtime = call.runtime
            let domain = try call.string(1), name = try call.string(2)
            guard let path = runtime.plugins.file(domain: domain, name: name) else { return }
            let source: String
            do {
                source = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw ScriptError("cannot read plugin '\(domain)/\(name).lua': \(FileAccess.reason(error))")
            }
            runtime.loadedFiles.append(path)
            // Once per plugin: one that fails to load is looked up again on every use.
            if !runtime.loadedPlugins.contains(where: { $0.domain == domain && $0.name == name }) {
                let isBundled = runtime.plugins.folders.first { path.hasPrefix($0.path + "/") }?.isBundled ?? false
                runtime.loadedPlugins.append(LoadedPlugin(domain: domain, name: name, isBundled: isBundled, source: source))
            }
            try call.push(source)
            try call.push("@\(domain)/\(name).lua")
        },
        /// The names of a domain's plugin files, one per line.
        Binding(name: "listPlugins", tables: ["host"], tensorResults: 0) { call in
            let names = call.runtime.plugins.entries(domain: try call.string(1)).map(\.name)
            try call.push(names.joined(separator: "\n"))
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
            let written = try call.runtime.files.write(Data(text.utf8), to: path, disk: call.runtime.disk)
            try call.push(call.runtime.files.shownPath(written))
        },
        /// (step, total[, note]): the recipe's loop (kiri.progress) reached `step` of `total` (0 as it starts).
        Binding(name: "progress", tables: ["host"], tensorResults: 0) { call in
            let (step, total) = (try call.integer(1), try call.integer(2))
            if call.isNil(3) {
                call.runtime.progress?.step(step, of: total)
            } else {
                call.runtime.progress?.step(step, of: total, note: try call.string(3))
            }
        },
        /// (step, total[, sigma, denoised]) → whether to stop now, and whether a stop may come: the outermost sampler
        /// reached `step` of `total`.
        Binding(name: "samplerProgress", tables: ["host"], tensorResults: 0) { call in
            let (step, total) = (try call.integer(1), try call.integer(2))
            let sigma = call.isNil(3) ? nil : try call.number(3)
            let denoised = call.isTensor(4) ? try call.tensor(4) : nil
            call.push(boolean: call.runtime.progress?.step(step, of: total, sigma: sigma, denoised: denoised) ?? false)
            call.push(boolean: call.runtime.progress?.canStopSamplers ?? false)
        },
        Binding(name: "progressEnd", tables: ["host"], tensorResults: 0) { call in
            call.runtime.progress?.end()
        },
        /// Monotonic wall-clock seconds, for timing inside recipes and benchmarks.
        Binding(name: "clock", tables: ["kiri"], tensorResults: 0) { call in
            var time = timespec()
            clock_gettime(CLOCK_MONOTONIC, &time)
            call.push(Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9)
        },
    ]
}
