import Foundation
import KiriLua
import KiriModels
import KiriTensor

/// A network being trained (`kiri.models.create`, `kiri.models.load(path, {train = true})`): the trainable UNet,
/// the config it was made from, which `m:save` writes back beside the weights, and its scheduler config.
final class TrainingModel {
    let network: TrainableUNet
    let config: JSONValue
    let scheduler: SchedulerConfig
    /// The scheduler config as given, or diffusers' defaults written out.
    let schedulerJSON: JSONValue

    init(network: TrainableUNet, config: JSONValue, scheduler: SchedulerConfig, schedulerJSON: JSONValue?) {
        (self.network, self.config, self.scheduler) = (network, config, scheduler)
        self.schedulerJSON = schedulerJSON ?? SchedulerConfig.defaultJSON
    }

    var info: [(name: String, value: ModelSummary.Value?)] {
        ModelSummary.info(config: network.config, scheduler: scheduler, parameterCount: network.parameterCount, dtype: .f32, family: nil)
    }
}

/// Training in Torch7 nn's manner (Preludes/training.lua): trainable networks, their parameters as tensors the
/// script shares with the engine, AdamW, an EMA, gradient clipping, saving, and `kiri.save_tensors` /
/// `kiri.load_tensors` for the state a run resumes from. Every object lives under a handle only the prelude's
/// closures hold, until the run ends.
public final class TrainingLibrary: LuaLibrary {
    private var models: [Int: TrainingModel] = [:]
    /// Inference networks over a snapshot of a trained network's parameters, for sampling (m:denoiser()).
    private var snapshots: [Int: UNet] = [:]
    private var optimizers: [Int: (model: TrainingModel, optimizer: AdamW)] = [:]
    private var averages: [Int: (model: TrainingModel, average: ExponentialMovingAverage)] = [:]
    private var nextHandle = 1

    public init() {}

    public let prelude: [UInt8]? = PackageResources.training_lua

    public func close() {
        models.removeAll()
        snapshots.removeAll()
        optimizers.removeAll()
        averages.removeAll()
    }

    private func store<T>(_ value: T, in table: inout [Int: T]) -> Int {
        let handle = nextHandle
        nextHandle += 1
        table[handle] = value
        return handle
    }

    private func model(_ call: LuaCall, _ index: Int = 1) throws -> TrainingModel {
        guard let model = models[try call.integer(index)] else { throw ScriptError("the model is closed") }
        try model.network.checkParameters()
        return model
    }

    private func optimizer(_ call: LuaCall) throws -> (model: TrainingModel, optimizer: AdamW) {
        guard let entry = optimizers[try call.integer(1)] else { throw ScriptError("the optimizer's model is closed") }
        return entry
    }

    /// Parses JSON text the prelude encoded from a script's table or read from a file the script named.
    private static func json(_ text: String, _ what: String) throws -> JSONValue {
        do {
            return try StrictJSONParser.parse(Array(text.utf8))
        } catch {
            throw ScriptError("\(what): \(error)")
        }
    }

    /// The tensor at `index`, numbered in errors as the script's method call numbers it (after self).
    private static func tensorArgument(_ call: LuaCall, _ index: Int) throws -> Tensor {
        guard call.isTensor(index) else { throw ScriptError(argument: index - 1, "Tensor expected, got \(call.typeName(index))") }
        return try call.tensor(index)
    }

    /// Runs a network call, its TensorErrors numbered as the script's method call numbers its arguments.
    private static func network<T>(_ function: String, _ body: () throws -> T) throws -> T {
        var result: T?
        try ScriptError.naming(function) {
            do {
                result = try body()
            } catch let error as TensorError {
                throw ScriptError(argument: error.argument, error.message)
            } catch let error as ModelFileError {
                throw ScriptError(error.description)
            }
        }
        return result!
    }

    public var bindings: [Binding] { [
        /// (config JSON, what the config is called in errors, seed, scheduler JSON or nil) → handle: a new network.
        Binding(name: "trainCreate", tables: ["host"], tensorResults: 0, offScriptClock: true) { call in
            try ScriptError.naming("create") {
                let name = try call.string(2)
                let configJSON = try Self.json(try call.string(1), name)
                let seed = try call.integer(3)
                guard seed >= 0 else { throw ScriptError(argument: 2, "seed must be at least 0, got \(seed)") }
                let schedulerJSON = try call.isNil(4) ? nil : Self.json(try call.string(4), "scheduler config")
                do {
                    let config = try UNetConfig(json: configJSON, path: name)
                    let scheduler = try schedulerJSON.map { try SchedulerConfig(json: $0, path: "scheduler config") } ?? SchedulerConfig()
                    let network = try TrainableUNet(config: config, seed: UInt64(seed))
                    call.push(integer: self.store(TrainingModel(network: network, config: configJSON, scheduler: scheduler,
                                                                schedulerJSON: schedulerJSON), in: &self.models))
                } catch let error as ModelFileError {
                    throw ScriptError(error.description)
                } catch let error as TensorError {
                    throw ScriptError("cannot create the network: \(error.message)")
                }
            }
        },
        /// (path) → handle: a network read from a diffusers UNet folder or a .safetensors file with its config.json.
        Binding(name: "trainLoad", tables: ["host"], tensorResults: 0, offScriptClock: true) { call in
            try ScriptError.naming("load") {
                let path = try call.string(1)
                _ = try call.runtime.files.resolveForReading(path)
                do {
                    let files = try PipelineFiles.locate(path)
                    let network: ModelFiles
                    switch files.layout {
                    case .network(let modelFiles): network = modelFiles
                    case .diffusers(let unet, _, _, _, _): network = unet
                    case .singleFile:
                        throw ScriptError("cannot train '\(path)': a single-file checkpoint; train from a diffusers folder or a .safetensors file with its config.json")
                    }
                    for file in [network.config, network.weights] + (network.schedulerConfig.map { [$0] } ?? []) {
                        _ = try call.runtime.files.resolveForReading(file)
                    }
                    // Each config read once, bounded as every model's config is, and kept to be written back by m:save.
                    let configJSON = try JSONValue(configAt: network.config)
                    let schedulerJSON = try network.schedulerConfig.map { path throws(ModelFileError) in try JSONValue(configAt: path) }
                    let scheduler = try schedulerJSON.map { try SchedulerConfig(json: $0, path: network.schedulerConfig!) } ?? SchedulerConfig()
                    let trainable = try TrainableUNet(config: UNetConfig(json: configJSON, path: network.config),
                                                      weights: SafetensorsFile(path: network.weights))
                    call.push(integer: self.store(TrainingModel(network: trainable, config: configJSON, scheduler: scheduler,
                                                                schedulerJSON: schedulerJSON), in: &self.models))
                } catch let error as ModelFileError {
                    throw ScriptError(error.description)
                }
            }
        },
        /// (handle, "info" or "schedule", i) → the i-th field's name and value, or nothing past the last.
        Binding(name: "trainField", tables: ["host"], tensorResults: 0) { call in
            let model = try self.model(call)
            let group = try call.string(2) == "info" ? model.info : ModelSummary.schedule(model.scheduler)
            let index = try call.integer(3)
            guard (1...group.count).contains(index) else { return }
            try call.push(field: group[index - 1])
        },
        /// (handle, x, t, class, context) → the output, keeping what backward needs (m:forward).
        Binding(name: "trainForward", tables: ["host"], tensorResults: 1, offScriptClock: true) { call in
            let model = try self.model(call), config = model.network.config
            try Self.network("forward") {
                let x = try Self.tensorArgument(call, 2)
                guard x.rank == 4 else { throw TensorError(argument: 1, "expected [batch, \(config.inChannels), height, width], got \(shapeString(x.shape))") }
                let batch = x.shape[0]
                let timesteps = try ModelLibrary.numbers(call, 3, argument: 2, name: "t", batch: batch).map { Float($0) }
                let classes = try ModelLibrary.classLabels(call, 4, batch: batch, classes: config.numClassEmbeds)
                let context = try ModelLibrary.context(call, 5, batch: batch, width: config.crossAttentionDim?.first)
                try call.push(model.network.forward(x, timesteps: timesteps, classLabels: classes, context: context))
            }
        },
        /// (handle, dOutput) → x's gradient and the context's (or nil), adding every parameter's (m:backward).
        Binding(name: "trainBackward", tables: ["host"], tensorResults: 2, offScriptClock: true) { call in
            let model = try self.model(call)
            try Self.network("backward") {
                let (input, context) = try model.network.backward(try Self.tensorArgument(call, 2))
                try call.push(input)
                if let context { try call.push(context) } else { call.pushNil() }
            }
        },
        /// (handle) → the number of parameters.
        Binding(name: "trainParameterCount", tables: ["host"], tensorResults: 0) { call in
            call.push(integer: try self.model(call).network.parameters.count)
        },
        /// (handle, i) → the i-th parameter's name, value and gradient, the engine's own tensors (m:parameters()).
        Binding(name: "trainParameter", tables: ["host"], tensorResults: 2) { call in
            let parameters = try self.model(call).network.parameters, index = try call.integer(2)
            guard parameters.indices.contains(index - 1) else { return }
            let parameter = parameters[index - 1]
            try call.push(parameter.name)
            try call.push(parameter.value)
            try call.push(parameter.grad)
        },
        Binding(name: "trainZeroGrad", tables: ["host"], tensorResults: 0) { call in
            try self.model(call).network.zeroGrad()
        },
        /// (handle, enabled): gradient checkpointing on or off from the next forward (m:gradient_checkpointing).
        Binding(name: "trainGradientCheckpointing", tables: ["host"], tensorResults: 0) { call in
            try self.model(call).network.gradientCheckpointing = call.boolean(2, default: true)
        },
        /// (handle, folder, dtype or nil) → the weights file's path: diffusers' layout, config.json, the weights (float32,
        /// or rounded to f16 or bf16) and the scheduler config, written under the output folder (m:save).
        Binding(name: "trainSave", tables: ["host"], tensorResults: 0) { call in
            let model = try self.model(call)
            let files = call.runtime.files, disk = call.runtime.disk
            let folder = Self.saveFolder(try call.string(2), files)
            let dtype = try call.isNil(3) ? "f32" : call.string(3)
            guard let format = WeightFormat(rawValue: dtype), format != .q8_0 else {
                throw ScriptError("bad argument #2 to 'save' (dtype must be f32, f16 or bf16, got '\(dtype)')")
            }
            let weights = safetensorsBytes(model.network.parameters.map { ($0.name, $0.value) }, format: format,
                                           metadata: ["format": "pt"])
            try files.write(Data((model.config.text(indent: 2) + "\n").utf8), to: folder + "/config.json", disk: disk)
            try files.write(Data((model.schedulerJSON.text(indent: 2) + "\n").utf8), to: folder + "/scheduler_config.json",
                            disk: disk)
            let written = try files.write(weights, to: folder + "/" + ModelFiles.diffusersWeights, disk: disk)
            try call.push(files.shownPath(written))
        },
        /// (handle) → a snapshot handle: the inference network over the parameters as they are now (m:denoiser()).
        Binding(name: "trainSnapshot", tables: ["host"], tensorResults: 0, offScriptClock: true) { call in
            let network = try self.model(call).network
            let unet = try Self.network("denoiser") {
                try UNet(config: network.config, weights: ParameterSource(network.parameters, path: "the network being trained"))
            }
            call.push(integer: self.store(unet, in: &self.snapshots))
        },
        /// (snapshot, x, t, class, context) → the snapshot network's output, as m:forward of a loaded model.
        Binding(name: "snapshotForward", tables: ["host"], tensorResults: 1, offScriptClock: true) { call in
            guard let unet = self.snapshots[try call.integer(1)] else { throw ScriptError("the denoiser's network is closed") }
            try Self.network("forward") {
                let x = try call.tensor(2), batch = x.shape.first ?? 0
                let timesteps = try ModelLibrary.numbers(call, 3, argument: 2, name: "t", batch: batch).map { Float($0) }
                let classes = try ModelLibrary.classLabels(call, 4, batch: batch, classes: unet.config.numClassEmbeds)
                let context = try ModelLibrary.context(call, 5, batch: batch, width: unet.config.crossAttentionDim?.first)
                try call.push(unet.forward(x, timesteps: timesteps, classLabels: classes, context: context))
            }
        },
        /// (handle or snapshot): frees it now.
        Binding(name: "trainRelease", tables: ["host"], tensorResults: 0) { call in
            let handle = try call.integer(1)
            self.snapshots[handle] = nil
            // The optimizers and EMAs of a model hold its parameters: they go with it.
            if let model = self.models.removeValue(forKey: handle) {
                self.optimizers = self.optimizers.filter { $0.value.model !== model }
                self.averages = self.averages.filter { $0.value.model !== model }
            }
        },

        /// (model, lr, beta1, beta2, eps, weight_decay) → optimizer handle (kiri.optim.adamw).
        Binding(name: "adamwCreate", tables: ["host"], tensorResults: 0) { call in
            let model = try self.model(call)
            let options = AdamWOptions(lr: try call.number(2), beta1: try call.number(3), beta2: try call.number(4),
                                       eps: try call.number(5), weightDecay: try call.number(6))
            call.push(integer: self.store((model, try AdamW(model.network.parameters, options)), in: &self.optimizers))
        },
        /// (optimizer, lr or nil) → the steps taken, after one more with the learning rate set to lr when given.
        Binding(name: "adamwStep", tables: ["host"], tensorResults: 0) { call in
            let (model, optimizer) = try self.optimizer(call)
            try model.network.checkParameters()
            try optimizer.checkState()
            if let lr = try call.optionalNumber(2) { optimizer.options.lr = lr }
            optimizer.step()
            call.push(integer: optimizer.steps)
        },
        /// (optimizer, i) → the i-th parameter's name, exp_avg and exp_avg_sq (the optimizer's own tensors), and
        /// the steps taken.
        Binding(name: "adamwState", tables: ["host"], tensorResults: 2) { call in
            let optimizer = try self.optimizer(call).optimizer
            let index = try call.integer(2)
            guard optimizer.parameters.indices.contains(index - 1) else { return }
            try call.push(optimizer.parameters[index - 1].name)
            try call.push(optimizer.expAvg[index - 1])
            try call.push(optimizer.expAvgSq[index - 1])
            call.push(integer: optimizer.steps)
        },
        /// (optimizer, steps): continues a saved run (the moments copied in by the prelude first).
        Binding(name: "adamwResume", tables: ["host"], tensorResults: 0) { call in
            let optimizer = try self.optimizer(call).optimizer
            let steps = try call.integer(2)
            guard steps >= 0 else { throw ScriptError(argument: 1, "the steps taken must be at least 0, got \(steps)") }
            optimizer.resume(steps: steps)
        },
        /// (model, decay) → EMA handle (kiri.optim.ema).
        Binding(name: "emaCreate", tables: ["host"], tensorResults: 0) { call in
            let model = try self.model(call)
            call.push(integer: self.store((model, try ExponentialMovingAverage(model.network.parameters, decay: try call.number(2))),
                                          in: &self.averages))
        },
        /// (ema, "update" | "copy" | i) → for i, the i-th parameter's name and its average (the EMA's own tensor).
        Binding(name: "emaCall", tables: ["host"], tensorResults: 1) { call in
            guard let (model, average) = self.averages[try call.integer(1)] else { throw ScriptError("the EMA's model is closed") }
            try model.network.checkParameters()
            try average.checkState()
            if call.isNumber(2) {
                let index = try call.integer(2)
                guard average.parameters.indices.contains(index - 1) else { return }
                try call.push(average.parameters[index - 1].name)
                try call.push(average.averages[index - 1])
                return
            }
            if try call.string(2) == "update" { average.update() } else { average.copy(to: average.parameters) }
        },
        /// (model, max_norm) → the gradients' total 2-norm before clipping (kiri.optim.clip_grad_norm).
        Binding(name: "clipGradNorm", tables: ["host"], tensorResults: 0) { call in
            let model = try self.model(call)
            call.push(Double(clipGradNorm(model.network.parameters, maxNorm: Float(try call.number(2)))))
        },

        /// (path, tensors, metadata {key = value} or nil, their names separated by newlines) → the path written: a
        /// safetensors file of float32 tensors (kiri.save_tensors, whose arguments come first in its order).
        Binding(name: "saveTensors", tables: ["host"], tensorResults: 0) { call in
            try ScriptError.naming("save_tensors") {
                let path = try call.string(1)
                let names = try call.string(4).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                let tensors = try call.tensors(2, names: names)
                let metadata = call.isNil(3) ? [] : try call.stringTable(3)
                let bytes = safetensorsBytes(Array(zip(names, tensors)).map { ($0.0, $0.1) },
                                             metadata: Dictionary(metadata.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 }))
                try call.push(call.runtime.files.shownPath(try call.runtime.files.write(bytes, to: path, disk: call.runtime.disk)))
            }
        },
        /// (path) → the names of a safetensors file's tensors, separated by newlines, and its metadata.
        Binding(name: "tensorNames", tables: ["host"], tensorResults: 0) { call in
            try ScriptError.naming("load_tensors") {
                let file = try Self.tensorFile(call, try call.string(1))
                try call.push(file.names.joined(separator: "\n"))
                try call.push(strings: file.metadata.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
            }
        },
        /// (path, name) → that tensor as float32.
        Binding(name: "loadTensor", tables: ["host"], tensorResults: 1) { call in
            let path = try call.string(1), name = try call.string(2)
            do {
                try call.push(try Self.tensorFile(call, path).tensor(name))
            } catch let error as ModelFileError {
                throw ScriptError("cannot load '\(path)': \(error.message)")
            }
        },
    ] }

    /// `folder`, or, when it holds a saved model and the run may not overwrite, the first of `folder-2`, `folder-3`,
    /// ... that holds none of its files: a save's three files stay together, where each file taking its own next
    /// free name would leave a folder whose config.json is the old model's.
    private static func saveFolder(_ folder: String, _ files: FileAccess) -> String {
        let folder = folder.count > 1 && folder.hasSuffix("/") ? String(folder.dropLast()) : folder
        guard !files.overwrite, let output = files.outputDirectory else { return folder }
        let names = ["config.json", "scheduler_config.json", ModelFiles.diffusersWeights]
        let candidates = [folder] + (2...10000).map { "\(folder)-\($0)" }
        return candidates.first { candidate in
            !names.contains { FileManager.default.fileExists(atPath: "\(output)/\(candidate)/\($0)") }
        } ?? folder
    }

    /// A safetensors file the script may read, parsed (its header bounded as for any model file). Errors name it as
    /// the script did, not by the real path, which a script is not shown.
    private static func tensorFile(_ call: LuaCall, _ path: String) throws -> SafetensorsFile {
        let real = try call.runtime.files.resolveForReading(path)
        do {
            return try SafetensorsFile(path: real)
        } catch {
            throw ScriptError("cannot load '\(path)': \(error.message)")
        }
    }
}
