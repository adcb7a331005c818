import Foundation
import KiriModels
import KiriTensor
import LuaBridge

/// A network `kiri.models.load` loaded. The runtime keeps it under a handle that only the Lua closures of its model
/// table hold (`modelsPrelude`), until `m:close()` or the end of the run; its tensors count against the run's
/// memory cap like any other.
final class LoadedModel {
    let summary: ModelSummary
    let network: UNet

    init(summary: ModelSummary, network: UNet) {
        self.summary = summary
        self.network = network
    }

    /// Loads the model at `path`: a `.safetensors` file with its `config.json`, or a diffusers folder
    /// (ModelFiles.locate), or `bundled:NAME` for a model shipped with Kiri (`bundled`, by name). Every file it reads
    /// must be readable by the script, so the sandbox's read roots apply to the config and scheduler config found
    /// beside the weights too. Messages show the path as the script gave it, never a bundled model's host folder.
    static func load(_ path: String, files access: FileAccess, bundled: [String: String]) throws -> LoadedModel {
        var located = path, hostFolder: String?
        if path.hasPrefix("bundled:") {
            guard let folder = bundled[String(path.dropFirst("bundled:".count))] else {
                throw ScriptError("no bundled model '\(path)' (bundled: \(bundled.keys.sorted().joined(separator: ", ")))")
            }
            (located, hostFolder) = (folder, folder)
        }
        _ = try access.resolveForReading(located)
        do {
            let files = try ModelFiles.locate(located)
            for file in [files.weights, files.config] + (files.schedulerConfig.map { [$0] } ?? []) {
                _ = try access.resolveForReading(file)
            }
            let weights = try SafetensorsFile(path: files.weights)
            let summary = try ModelSummary(files: files, weights: weights)
            // UNet refuses a network too large for the run's memory cap (MemoryBudget.current) before converting.
            return LoadedModel(summary: summary, network: try UNet(config: summary.config, weights: weights))
        } catch let error as ModelFileError {
            // It starts with the file at fault.
            throw ScriptError(hostFolder.map { error.description.replacingOccurrences(of: $0, with: path) } ?? error.description)
        } catch let error as ScriptError {
            throw error
        } catch let error as TensorError {
            throw ScriptError("cannot load '\(path)': \(error.message)")
        } catch {
            throw ScriptError("cannot load '\(path)': \(error)")
        }
    }
}

extension Bindings {
    /// Host functions behind `kiri.models.load` and the model table (`modelsPrelude`), which calls them through
    /// pcall and re-raises at the script's line. So their messages name the script's function themselves, with the
    /// argument numbers the script sees: `m:forward(x, t, extra)` has x as #1, although Swift gets the handle first.
    static let models: [Binding] = [
        /// (path) → handle.
        Binding(name: "modelLoad", tables: ["host"], tensorResults: 0) { call in
            try named("load") {
                let path = try call.string(1)
                let runtime = call.runtime
                let model = try LoadedModel.load(path, files: runtime.files, bundled: runtime.bundledModels)
                let handle = runtime.nextModelHandle
                runtime.nextModelHandle += 1
                runtime.models[handle] = model
                call.push(integer: handle)
            }
        },
        /// (handle, "info" or "schedule", i) → the i-th field's name and value, or nothing past the last.
        Binding(name: "modelField", tables: ["host"], tensorResults: 0) { call in
            let model = try loadedModel(call)
            let group = try call.string(2) == "info" ? model.summary.info : model.summary.schedule
            let index = try call.integer(3)
            guard (1...group.count).contains(index) else { return }
            let (name, value) = group[index - 1]
            try call.push(name)
            switch value {
            case .text(let text)?: try call.push(text)
            case .integer(let value)?: call.push(integer: value)
            case .number(let value)?: call.push(value)
            case .flag(let value)?: kiri_result_boolean(call.call, value ? 1 : 0)
            case .integers(let values)?: try call.push(numbers: values.map(Double.init))
            case .numbers(let values)?: try call.push(numbers: values)
            case nil: kiri_result_nil(call.call)
            }
        },
        /// (handle, x, t, class, context) → the network's output, for m:forward(x, t, {class=, context=}).
        Binding(name: "modelForward", tables: ["host"], tensorResults: 1) { call in
            try named("forward") {
                let model = try loadedModel(call)
                let config = model.network.config
                guard call.isTensor(2) else { throw ScriptError(argument: 1, "Tensor expected, got \(call.typeName(2))") }
                let x = try call.tensor(2)
                guard x.rank == 4, x.shape[1] == config.inChannels else {
                    throw ScriptError(argument: 1, "expected a [batch, \(config.inChannels), height, width] sample, got shape \(shapeString(x.shape))")
                }
                let batch = x.shape[0]
                let timesteps = try numbers(call, 3, argument: 2, name: "t", batch: batch).map { Float($0) }
                let classes = try classLabels(call, 4, batch: batch, classes: config.numClassEmbeds)
                let context = try context(call, 5, batch: batch, width: config.crossAttentionDim?.first)
                let output: Tensor
                do {
                    output = try model.network.forward(x, timesteps: timesteps, classLabels: classes, context: context)
                } catch let error as TensorError {
                    throw ScriptError(argument: error.argument, error.message)   // UNet numbers them as m:forward does
                } catch let error as ScriptError {
                    throw error
                } catch {
                    throw ScriptError("\(error)")
                }
                try call.push(output)
            }
        },
        /// (handle): frees the network now (m:close(), or `local m <close> = ...`).
        Binding(name: "modelRelease", tables: ["host"], tensorResults: 0) { call in
            call.runtime.models[try call.integer(1)] = nil
        },
    ]

    /// Runs a binding called through pcall, where lauxlib cannot name the function: argument errors get the
    /// "bad argument #n to 'function'" wording here.
    private static func named(_ function: String, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as ScriptError {
            guard let argument = error.argument else { throw error }
            throw ScriptError("bad argument #\(argument) to '\(function)' (\(error.message))")
        }
    }

    private static func loadedModel(_ call: LuaCall) throws -> LoadedModel {
        guard let model = call.runtime.models[try call.integer(1)] else { throw ScriptError("the model is closed") }
        return model
    }

    /// One finite number per batch element, from a number (the same for all), a list, or a 1-D tensor.
    private static func numbers(_ call: LuaCall, _ index: Int, argument: Int, name: String, batch: Int) throws -> [Double] {
        var values: [Double]
        if call.isNumber(index) {
            values = [try call.number(index)]
        } else if call.isTensor(index) {
            let tensor = try call.tensor(index)
            guard tensor.rank <= 1 else {
                throw ScriptError(argument: argument, "\(name) must be a number, a list or a 1-D Tensor, got shape \(shapeString(tensor.shape))")
            }
            values = tensor.values.map(Double.init)
        } else if call.type(index) == KIRI_TTABLE {
            let length = kiri_table_length(call.state, Int32(index))
            guard length == 1 || length == batch else {
                throw ScriptError(argument: argument, "\(name) has \(length) values but the batch has \(batch) samples")
            }
            values = []
            for position in 0..<length {
                _ = kiri_table_push(call.state, Int32(index), Int64(position + 1))
                defer { kiri_pop(call.state, 1) }
                var value = 0.0
                guard kiri_arg_number(call.state, -1, &value) != 0 else {
                    throw ScriptError(argument: argument, "\(name)[\(position + 1)] must be a number, got \(String(cString: kiri_arg_typename(call.state, -1)))")
                }
                values.append(value)
            }
        } else {
            throw ScriptError(argument: argument, "\(name): number, list or Tensor expected, got \(call.typeName(index))")
        }
        if values.count == 1 { values = Array(repeating: values[0], count: batch) }
        guard values.count == batch else {
            throw ScriptError(argument: argument, "\(name) has \(values.count) values but the batch has \(batch) samples")
        }
        if let bad = values.first(where: { !$0.isFinite }) {
            throw ScriptError(argument: argument, "\(name) must be finite, got \(bad.isNaN ? "nan" : bad > 0 ? "inf" : "-inf")")
        }
        return values
    }

    /// extra.class: diffusers' class indices, 0 to num_class_embeds - 1 (labels, not Lua positions).
    private static func classLabels(_ call: LuaCall, _ index: Int, batch: Int, classes: Int?) throws -> [Int]? {
        guard let classes else {
            if call.isNil(index) { return nil }
            throw ScriptError(argument: 3, "class given, but this model has no class embedding (num_class_embeds is not set)")
        }
        guard !call.isNil(index) else {
            throw ScriptError(argument: 3, "this model needs class labels: {class = label}, a label from 0 to \(classes - 1) or a list of one per sample")
        }
        return try numbers(call, index, argument: 3, name: "class", batch: batch).map { value in
            guard value == value.rounded(), value >= 0, value < Double(classes) else {
                throw ScriptError(argument: 3, "class \(String(format: "%.14g", value)) out of range: labels are integers from 0 to \(classes - 1)")
            }
            return Int(value)
        }
    }

    /// extra.context: encoder_hidden_states, [batch, tokens, cross_attention_dim].
    private static func context(_ call: LuaCall, _ index: Int, batch: Int, width: Int?) throws -> Tensor? {
        guard let width else {
            if call.isNil(index) { return nil }
            throw ScriptError(argument: 3, "context given, but this model has no cross-attention")
        }
        guard call.isTensor(index) else {
            if call.isNil(index) {
                throw ScriptError(argument: 3, "this model needs a context: {context = Tensor of shape [\(batch), tokens, \(width)]}")
            }
            throw ScriptError(argument: 3, "context: Tensor expected, got \(call.typeName(index))")
        }
        let context = try call.tensor(index)
        guard context.rank == 3, context.shape[0] == batch, context.shape[2] == width, context.shape[1] > 0 else {
            throw ScriptError(argument: 3, "context must have shape [\(batch), tokens, \(width)], got \(shapeString(context.shape))")
        }
        return context
    }
}

/// The prelude's part for models (spliced into `sandboxPrelude`, where `api`, `host`, `resolve`, `format` and
/// `setmetatable` are in scope). A model is a plain table: `info`, and methods closing over the handle, so a script
/// can neither forge nor reach another model's handle.
let modelsPrelude = #"""
do
    local load, field, forward, release = host.modelLoad, host.modelField, host.modelForward, host.modelRelease

    local function fields(handle, group)
        local values, i = {}, 1
        while true do
            local name, value = field(handle, group, i)
            if name == nil then return values end
            values[name] = value
            i = i + 1
        end
    end

    local function model_object(handle)
        local info = fields(handle, "info")
        info.schedule = fields(handle, "schedule")
        local schedule, prediction = fields(handle, "schedule"), info.prediction
        local model = {info = info}

        -- The raw network call: true and the output, or false and the message (raised by the caller, at its
        -- caller's line).
        local function call(x, t, extra)
            local class, context
            if extra ~= nil then
                if type(extra) ~= "table" then
                    return false, format("bad argument #3 to 'forward' (table or nil expected, got %s)", type(extra))
                end
                for key in pairs(extra) do
                    if key ~= "class" and key ~= "context" then
                        return false, format("bad argument #3 to 'forward' (unknown field '%s'; a model takes class and context)",
                            tostring(key))
                    end
                end
                class, context = extra.class, extra.context
            end
            return pcall(forward, handle, x, t, class, context)
        end

        -- As kiri.models.wrap calls it: network(x_in, t, extra).
        local function network(x, t, extra)
            local ok, result = call(x, t, extra)
            if not ok then error(result, 2) end
            return result
        end

        function model.forward(self, x, t, extra)
            if self ~= model then error("bad self for 'forward' (call it as m:forward(x, t, extra))", 2) end
            local ok, result = call(x, t, extra)
            if not ok then error(result, 2) end
            return result
        end

        -- D(x, sigma, extra): kiri.models.wrap with this network, its prediction type and training schedule;
        -- opts (sigma_data, quantize, ...) are passed on to wrap and win.
        function model.denoiser(self, opts)
            if self ~= model then error("bad self for 'denoiser' (call it as m:denoiser(opts))", 2) end
            if opts ~= nil and type(opts) ~= "table" then
                error(format("bad argument #1 to 'denoiser' (table or nil expected, got %s)", type(opts)), 2)
            end
            local options = {network = network, prediction = prediction}
            for key, value in next, schedule do options[key] = value end
            if opts then for key, value in pairs(opts) do options[key] = value end end
            local denoiser = resolve("models", "wrap")(options)
            return denoiser
        end

        function model.close(self)
            if self ~= model then error("bad self for 'close' (call it as m:close())", 2) end
            release(handle)
        end

        local description = format("Model: %s, %d parameters", info.architecture, info.parameters)
        return setmetatable(model, {
            __close = function() release(handle) end,
            __tostring = function() return description end,
            __metatable = false,
        })
    end

    api.models.load = function(...)
        local ok, handle = pcall(load, ...)
        if not ok then error(handle, 2) end
        return model_object(handle)
    end

    -- The name kiri.models.load knows a model shipped with Kiri by ("bundled:NAME"; its folder stays the host's).
    api.models.bundled = function(name)
        if type(name) ~= "string" then
            error(format("bad argument #1 to 'bundled' (string expected, got %s)", type(name)), 2)
        end
        local path, names = host.bundledModel(name)
        if path == nil then error(format("no bundled model '%s' (bundled: %s)", name, names), 2) end
        return path
    end
end
"""#
