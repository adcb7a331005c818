import Foundation
import KiriLua
import KiriModels
import KiriTensor

/// A network `kiri.models.load` loaded. ModelLibrary keeps it under a handle that only the Lua closures of its model
/// table hold (Preludes/models.lua), until `m:close()` or the end of the run; its tensors count against the run's
/// memory cap like any other.
final class LoadedModel {
    let summary: ModelSummary
    let pipeline: DiffusionPipeline
    var network: UNet { pipeline.unet }

    init(summary: ModelSummary, pipeline: DiffusionPipeline) {
        self.summary = summary
        self.pipeline = pipeline
    }

    /// A1111's short hash of a checkpoint file: the first 10 hex digits of its SHA-256 (modules/hashes.py), for
    /// the PNG's "Model hash"; nil for a folder, which A1111 cannot load. Computed once, when first asked for (a
    /// cached model keeps it for later runs); nil too when the run stops meanwhile (which then fails anyway), and
    /// then not kept.
    var hash: String? {
        if let knownHash { return knownHash }
        let file: String
        switch summary.files.layout {
        case .singleFile(let path): file = path
        case .network(let files): file = files.weights
        case .diffusers: return nil
        }
        guard let mapped = try? MappedFile(path: file) else { return nil }
        defer { mapped.unmap() }
        let cancellation = Cancellation.current
        knownHash = SHA256.hex(mapped.bytes) { cancellation?.isStopped ?? false }.map { String($0.prefix(10)) }
        return knownHash
    }
    private var knownHash: String?

    /// Loads the model at `path`: a `.safetensors` file with its `config.json`, or a diffusers folder
    /// (ModelFiles.locate), `bundled:NAME` for a model shipped with Kiri, or `served:NAME` for one a server offers
    /// (`named`, by prefix and name); from `cache` when an earlier run loaded it. Every file it reads must be
    /// readable by the script, so the sandbox's read roots apply to the config and scheduler config found beside
    /// the weights too. Messages show the path as the script gave it, never a named model's host path.
    static func load(_ path: String, vae: String? = nil, weights: WeightFormat? = nil, files access: FileAccess,
                     named: [String: [String: String]], cache: ModelCache? = nil) throws -> LoadedModel {
        var located = path, hostFolder: String?
        for (kind, models) in named where path.hasPrefix(kind + ":") {
            guard let folder = models[String(path.dropFirst(kind.count + 1))] else {
                throw ScriptError("no \(kind) model '\(path)' (\(kind): \(models.keys.sorted().joined(separator: ", ")))")
            }
            (located, hostFolder) = (folder, folder)
        }
        _ = try access.resolveForReading(located)
        do {
            let files = try PipelineFiles.locate(located)
            let allFiles = files.files + (vae.map { [$0] } ?? [])
            for file in allFiles { _ = try access.resolveForReading(file) }
            func load() throws -> LoadedModel {
                let summary = try ModelSummary(files: files)
                // Each network refuses to load past the memory cap (MemoryBudget.current) before converting.
                let pipeline = try DiffusionPipeline(files: files, vaeFile: vae, weights: weights) { padToken in
                    try BundledFiles.clipTokenizer(padToken: padToken)
                }
                return LoadedModel(summary: summary, pipeline: pipeline)
            }
            guard let cache else { return try load() }
            return try cache.model(path: FileAccess.realPath(located) ?? located, files: allFiles,
                                   options: "\(vae ?? "")|\(weights?.rawValue ?? "")", load: load)
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

/// `kiri.models.load` and the model table (Preludes/models.lua), whose closures call these host functions through
/// pcall and re-raise at the script's line. So their messages name the script's function themselves, with the
/// argument numbers the script sees: `m:forward(x, t, extra)` has x as #1, although Swift gets the handle first.
public final class ModelLibrary: LuaLibrary {
    /// Models shipped with Kiri, by name (`kiri.models.bundled(name)`); their folders must be read roots.
    let bundled: [String: String]
    /// Models a server offers, by name (`served:NAME`), so that no host path reaches its jobs' scripts or PNGs.
    let served: [String: String]
    /// Networks loaded, by handle; freed by `m:close()` or with the run (unless `cache` keeps them).
    private var models: [Int: LoadedModel] = [:]
    private var nextHandle = 1
    let cache: ModelCache?

    public init(bundled: [String: String] = [:], served: [String: String] = [:], cache: ModelCache? = nil) {
        self.bundled = bundled
        self.served = served
        self.cache = cache
    }

    public let prelude: [UInt8]? = PackageResources.models_lua

    public func close() { models.removeAll() }

    public var bindings: [Binding] { [
        /// (path, vae path or nil, weight format or nil) → handle.
        Binding(name: "modelLoad", tables: ["host"], tensorResults: 0, offScriptClock: true) { call in
            try ScriptError.naming("load") {
                let path = try call.string(1)
                let vae = call.isNil(2) ? nil : try call.string(2)
                let weights = try call.isNil(3) ? nil : WeightFormat(rawValue: try call.string(3)) ?? {
                    throw ScriptError("bad argument #2 to 'load' (weights must be one of \(WeightFormat.allCases.map(\.rawValue).joined(separator: ", ")), got '\(try call.string(3))')")
                }()
                // A second handle on a model this run holds is a copy of its own: m:apply_lora changes one model only.
                var model = try LoadedModel.load(path, vae: vae, weights: weights, files: call.runtime.files,
                                                 named: ["bundled": self.bundled, "served": self.served], cache: self.cache)
                if self.cache != nil, self.models.values.contains(where: { $0 === model }) {
                    model = try LoadedModel.load(path, vae: vae, weights: weights, files: call.runtime.files,
                                                 named: ["bundled": self.bundled, "served": self.served])
                }
                let handle = self.nextHandle
                self.nextHandle += 1
                self.models[handle] = model
                call.push(integer: handle)
            }
        },
        /// (handle, "info" or "schedule", i) → the i-th field's name and value, or nothing past the last.
        Binding(name: "modelField", tables: ["host"], tensorResults: 0) { call in
            let model = try self.loadedModel(call)
            let group = try call.string(2) == "info" ? model.summary.info : model.summary.schedule
            let index = try call.integer(3)
            guard (1...group.count).contains(index) else { return }
            try call.push(field: group[index - 1])
        },
        /// (handle, x, t, class, context) → the network's output, for m:forward(x, t, {class=, context=}).
        Binding(name: "modelForward", tables: ["host"], tensorResults: 1, offScriptClock: true) { call in
            try ScriptError.naming("forward") {
                let model = try self.loadedModel(call)
                let config = model.network.config
                guard call.isTensor(2) else { throw ScriptError(argument: 1, "Tensor expected, got \(call.typeName(2))") }
                let x = try call.tensor(2)
                guard x.rank == 4, x.shape[1] == config.inChannels else {
                    throw ScriptError(argument: 1, "expected a [batch, \(config.inChannels), height, width] sample, got shape \(shapeString(x.shape))")
                }
                let batch = x.shape[0]
                let timesteps = try Self.numbers(call, 3, argument: 2, name: "t", batch: batch).map { Float($0) }
                let classes = try Self.classLabels(call, 4, batch: batch, classes: config.numClassEmbeds)
                let context = try Self.context(call, 5, batch: batch, width: config.crossAttentionDim?.first)
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
        /// (handle, text) → the prompt's token ids with the start and end tokens, unpadded, for m:tokenize(text).
        Binding(name: "modelTokenize", tables: ["host"], tensorResults: 0) { call in
            try ScriptError.naming("tokenize", handleFirst: true) {
                let tokenizer = try self.component(call, \.tokenizer, "a tokenizer")
                let text = try Self.prompt(call, 2)
                try call.push(numbers: tokenizer.tokenize(text).map(Double.init))
            }
        },
        /// (handle, prompt, clip_skip) → the text encoder's hidden states [1, 77·k, D] for the prompt's k chunks of 75
        /// tokens, with A1111's emphasis (PromptEncoder), for m:encode(prompt, opts).
        Binding(name: "modelEncode", tables: ["host"], tensorResults: 1, offScriptClock: true) { call in
            try ScriptError.naming("encode", handleFirst: true) {
                let model = try self.loadedModel(call)
                let pipeline = model.pipeline
                guard let textEncoder = pipeline.textEncoder, let tokenizer = pipeline.tokenizer else {
                    throw ScriptError("this model has no text encoder: it takes no prompt")
                }
                let prompt = try Self.prompt(call, 2)
                let clipSkip = try call.optionalInteger(3) ?? 1
                guard (1...textEncoder.config.numHiddenLayers).contains(clipSkip) else {
                    throw ScriptError(argument: 3, "clip_skip must be from 1 (the last layer) to \(textEncoder.config.numHiddenLayers), got \(clipSkip)")
                }
                let encoder = try PromptEncoder(tokenizer: tokenizer, textModel: textEncoder, clipSkip: clipSkip)
                do {
                    try call.push(Self.translated { try encoder.encode(prompt: prompt) })
                } catch let error as PromptError {
                    throw ScriptError("\(error)")
                }
            }
        },
        /// (handle, latents) → images [B, 3, H, W] in about [-1, 1], for m:decode(latents).
        Binding(name: "modelDecode", tables: ["host"], tensorResults: 1, offScriptClock: true) { call in
            try ScriptError.naming("decode", handleFirst: true) {
                let latents = try Self.sample(call), pipeline = try self.loadedModel(call).pipeline
                try call.push(Self.translated { try pipeline.decode(latents) })
            }
        },
        /// (handle, images) → latents, the VAE posterior's mean times scaling_factor, for m:encode_image(images).
        Binding(name: "modelEncodeImage", tables: ["host"], tensorResults: 1, offScriptClock: true) { call in
            try ScriptError.naming("encode_image", handleFirst: true) {
                let images = try Self.sample(call), pipeline = try self.loadedModel(call).pipeline
                try call.push(Self.translated { try pipeline.encode(images: images) })
            }
        },
        /// (handle, width or nil, height or nil) → one sample's shape {C, h, w} for an image of that size (the
        /// model's default without them), and the image's shape {C, H, W}.
        Binding(name: "modelSampleShape", tables: ["host"], tensorResults: 0) { call in
            try ScriptError.naming("sample_shape", handleFirst: true) {
                let pipeline = try self.loadedModel(call).pipeline
                let (width, height) = (try call.optionalInteger(2), try call.optionalInteger(3))
                do {
                    let shape = try pipeline.sampleShape(width: width, height: height)
                    let factor = pipeline.vae?.config.downscaleFactor ?? 1
                    let channels = pipeline.vae?.config.inChannels ?? shape[0]
                    try call.push(numbers: shape.map(Double.init))
                    try call.push(numbers: [channels, shape[1] * factor, shape[2] * factor].map(Double.init))
                } catch let error as TensorError {
                    throw ScriptError(argument: error.message.hasPrefix("height") ? 3 : 2, error.message)
                }
            }
        },
        /// (handle, path, scale): merges a LoRA file into the UNet and text encoder (m:apply_lora(path, scale)).
        Binding(name: "modelApplyLoRA", tables: ["host"], tensorResults: 0, offScriptClock: true) { call in
            try ScriptError.naming("apply_lora", handleFirst: true) {
                let model = try self.loadedModel(call)
                let path = try call.string(2)
                let scale = try call.optionalNumber(3) ?? 1
                guard scale.isFinite, abs(scale) <= 100 else {
                    throw ScriptError(argument: 3, "scale must be a finite number from -100 to 100, got \(scale)")
                }
                _ = try call.runtime.files.resolveForReading(path)
                self.cache?.evict(model)
                do {
                    try model.pipeline.applyLoRA(path: path, scale: Float(scale))
                } catch let error as ModelFileError {
                    throw ScriptError(error.description)
                }
            }
        },
        /// (handle) → A1111's short hash of the model's file, or nothing for a folder (m:hash()).
        Binding(name: "modelHash", tables: ["host"], tensorResults: 0, offScriptClock: true) { call in
            if let hash = try self.loadedModel(call).hash { try call.push(hash) } else { call.pushNil() }
        },
        /// (handle): frees the network now (m:close(), or `local m <close> = ...`).
        Binding(name: "modelRelease", tables: ["host"], tensorResults: 0) { call in
            self.models[try call.integer(1)] = nil
        },
        /// (name) → `bundled:NAME` for kiri.models.load, or nothing and the names there are.
        Binding(name: "bundledModel", tables: ["host"], tensorResults: 0) { call in
            let name = try call.string(1)
            if self.bundled[name] != nil {
                try call.push("bundled:" + name)
            } else {
                call.pushNil()
                try call.push(self.bundled.keys.sorted().joined(separator: ", "))
            }
        },
    ] }

    /// A component the script asked for, or an error saying the model has none.
    private func component<T>(_ call: LuaCall, _ path: KeyPath<DiffusionPipeline, T?>, _ what: String) throws -> T {
        guard let value = try loadedModel(call).pipeline[keyPath: path] else { throw ScriptError("this model has no \(what)") }
        return value
    }

    /// Tokenizing and parsing run without checking the run's stop (security case 38): a prompt is bounded so that
    /// they take milliseconds. 64 KiB is hundreds of 75-token chunks.
    static let maximumPromptBytes = 1 << 16

    private static func prompt(_ call: LuaCall, _ index: Int) throws -> String {
        let text = try call.string(index)
        guard text.utf8.count <= maximumPromptBytes else {
            throw ScriptError(argument: index, "a prompt of \(text.utf8.count) bytes is longer than the \(maximumPromptBytes) Kiri encodes")
        }
        return text
    }

    /// The tensor argument of the script's call (#2 here, after the handle).
    private static func sample(_ call: LuaCall) throws -> Tensor {
        try call.tensor(2)
    }

    /// A network's TensorErrors, numbered as the script's call numbers its arguments, numbered as the host's
    /// (the handle first).
    static func translated<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as TensorError {
            throw ScriptError(argument: error.argument.map { $0 + 1 }, error.message)
        }
    }

    private func loadedModel(_ call: LuaCall) throws -> LoadedModel {
        guard let model = models[try call.integer(1)] else { throw ScriptError("the model is closed") }
        return model
    }

    /// One finite number per batch element, from a number (the same for all), a list, or a 1-D tensor.
    static func numbers(_ call: LuaCall, _ index: Int, argument: Int, name: String, batch: Int) throws -> [Double] {
        var values: [Double]
        if call.isNumber(index) {
            values = [try call.number(index)]
        } else if call.isTensor(index) {
            let tensor = try call.tensor(index)
            guard tensor.rank <= 1 else {
                throw ScriptError(argument: argument, "\(name) must be a number, a list or a 1-D Tensor, got shape \(shapeString(tensor.shape))")
            }
            values = tensor.values.map(Double.init)
        } else if call.isTable(index) {
            values = try call.numbers(index, argument: argument, name: name, limit: 1 << 16)
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
    static func classLabels(_ call: LuaCall, _ index: Int, batch: Int, classes: Int?) throws -> [Int]? {
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
    static func context(_ call: LuaCall, _ index: Int, batch: Int, width: Int?) throws -> Tensor? {
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

extension LuaCall {
    /// A field of `m.info` or `m.info.schedule`: its name, then its value as Lua sees it.
    func push(field: (name: String, value: ModelSummary.Value?)) throws {
        try push(field.name)
        switch field.value {
        case .text(let text)?: try push(text)
        case .integer(let value)?: push(integer: value)
        case .number(let value)?: push(value)
        case .flag(let value)?: push(boolean: value)
        case .integers(let values)?: try push(numbers: values.map(Double.init))
        case .numbers(let values)?: try push(numbers: values)
        case nil: pushNil()
        }
    }
}
