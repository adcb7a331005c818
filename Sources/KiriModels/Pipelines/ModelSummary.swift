/// What a model is, read from its files without converting the weights: the fields of Lua's `m.info` and of
/// `kiri info`, which both come from here so they cannot disagree.
public struct ModelSummary {
    /// A field value as Lua sees it.
    public enum Value: Equatable, Sendable, CustomStringConvertible {
        case text(String)
        case integer(Int)
        case number(Double)
        case flag(Bool)
        case integers([Int])
        case numbers([Double])

        public var description: String {
            switch self {
            case .text(let text): text
            case .integer(let value): String(value)
            case .number(let value): String(value)
            case .flag(let value): String(value)
            case .integers(let values): "{" + values.map(String.init).joined(separator: ", ") + "}"
            case .numbers(let values): "{" + values.map { String($0) }.joined(separator: ", ") + "} (\(values.count) values)"
            }
        }
    }

    public let files: PipelineFiles
    /// The denoising network's config.
    public let config: UNetConfig
    /// The model's scheduler config, or diffusers' defaults when it has none.
    public let scheduler: SchedulerConfig
    /// Elements in the weights of every component (for a diffusers save, the networks' parameters).
    public let parameterCount: Int
    public let dtype: DType?
    public let family: DiffusionPipeline.Family?
    /// Each component's name, class and where it comes from, for `kiri info`.
    public let components: [(name: String, description: String)]

    /// Reads the configs and the weights files' headers.
    public init(files: PipelineFiles) throws(ModelFileError) {
        self.files = files
        switch files.layout {
        case .network(let modelFiles):
            config = try UNetConfig(path: modelFiles.config)
            scheduler = try modelFiles.schedulerConfig.map { path throws(ModelFileError) in try SchedulerConfig(path: path) } ?? SchedulerConfig()
            let file = try SafetensorsFile(path: modelFiles.weights)
            (parameterCount, dtype, family) = (file.parameterCount, file.storageDType, nil)
            components = [("unet", "\(config.architecture.rawValue), \(modelFiles.weights)")]
        case .diffusers(let unet, let vae, let textEncoder, let tokenizer, _):
            config = try UNetConfig(path: unet.config)
            scheduler = try unet.schedulerConfig.map { path throws(ModelFileError) in try SchedulerConfig(path: path) } ?? SchedulerConfig()
            let weights = try [unet.weights, vae?.weights, textEncoder?.weights].compactMap { $0 }.map { path throws(ModelFileError) in
                try SafetensorsFile(path: path)
            }
            parameterCount = weights.reduce(0) { $0 + $1.parameterCount }
            dtype = weights[0].storageDType
            let textConfig = try textEncoder.map { files throws(ModelFileError) in try CLIPTextConfig(path: files.config) }
            family = DiffusionPipeline.family(config, textConfig)
            var components = [("unet", "\(config.architecture.rawValue), \(unet.weights)")]
            if let textEncoder, let textConfig {
                components.append(("text_encoder", "CLIPTextModel, \(textConfig.numHiddenLayers) layers × \(textConfig.hiddenSize), \(textConfig.hiddenAct.rawValue), \(textEncoder.weights)"))
            }
            if let tokenizer { components.append(("tokenizer", "CLIPTokenizer, \(tokenizer)")) }
            if let vae {
                let vaeConfig = try AutoencoderKLConfig(path: vae.config)
                components.append(("vae", "AutoencoderKL, \(vaeConfig.latentChannels) latent channels, scaling_factor \(vaeConfig.scalingFactor), \(vae.weights)"))
            }
            self.components = components
        case .singleFile(let path):
            let checkpoint = try SingleFileCheckpoint(path: path)
            config = checkpoint.unetConfig
            scheduler = checkpoint.schedulerConfig
            let maps = [checkpoint.unet, checkpoint.vae, checkpoint.textEncoder]
            parameterCount = maps.reduce(0) { total, map in total + map.names.reduce(0) { $0 + (map.shape($1)?.reduce(1, *) ?? 0) } }
            dtype = checkpoint.file.storageDType
            family = checkpoint.family == .sd2 ? .sd2 : .sd1
            components = [("checkpoint", "single file in the original layout, \(path)"),
                          ("unet", "\(config.architecture.rawValue), model.diffusion_model.*"),
                          ("text_encoder", checkpoint.family == .sd2 ? "CLIPTextModel (OpenCLIP ViT-H, penultimate layer), cond_stage_model.model.*"
                                                                    : "CLIPTextModel (OpenAI CLIP ViT-L), cond_stage_model.transformer.*"),
                          ("tokenizer", "CLIPTokenizer, Kiri's bundled CLIP BPE"),
                          ("vae", "AutoencoderKL, first_stage_model.*")]
        }
    }

    /// The scheduler's prediction type in `kiri.models.wrap`'s words.
    public var prediction: String { scheduler.prediction }

    /// `m.info`, in the order `kiri info` prints it; nil values are absent (nil in Lua).
    public var info: [(name: String, value: Value?)] {
        Self.info(config: config, scheduler: scheduler, parameterCount: parameterCount, dtype: dtype, family: family)
    }

    /// `m.info` of a network described by these, with or without files (a network being trained has none).
    public static func info(config: UNetConfig, scheduler: SchedulerConfig, parameterCount: Int, dtype: DType?,
                            family: DiffusionPipeline.Family?) -> [(name: String, value: Value?)] {
        [
            ("architecture", .text(family?.rawValue ?? config.architecture.rawValue)),
            ("parameters", .integer(parameterCount)),
            ("dtype", dtype.map { .text($0.rawValue) }),
            ("prediction", .text(scheduler.prediction)),
            ("prediction_type", .text(scheduler.predictionType.rawValue)),
            ("timestep_spacing", .text(scheduler.timestepSpacing.rawValue)),
            ("steps_offset", .integer(scheduler.stepsOffset)),
            ("sample_size", config.sampleSize.map { .integers($0) }),
            ("in_channels", .integer(config.inChannels)),
            ("out_channels", .integer(config.outChannels)),
            ("num_class_embeds", config.numClassEmbeds.map { .integer($0) }),
            ("cross_attention_dim", config.crossAttentionDim.flatMap(\.first).map { .integer($0) }),
        ]
    }

    /// `m.info.schedule`: the training noise schedule as `kiri.schedules.discrete` and `kiri.models.wrap` take
    /// it (Plugins/lib/schedule.lua). Explicit `trained_betas` become `alphas_cumprod`, their cumulative product
    /// of 1 - beta.
    public var schedule: [(name: String, value: Value?)] { Self.schedule(scheduler) }

    public static func schedule(_ scheduler: SchedulerConfig) -> [(name: String, value: Value?)] {
        if let betas = scheduler.trainedBetas {
            var product = 1.0
            return [("alphas_cumprod", .numbers(betas.map { beta in product *= 1 - beta; return product }))]
        }
        return [
            ("beta_schedule", .text(scheduler.betaSchedule.rawValue)),
            ("beta_start", .number(scheduler.betaStart)),
            ("beta_end", .number(scheduler.betaEnd)),
            ("num_train_timesteps", .integer(scheduler.numTrainTimesteps)),
            ("rescale_zero_snr", .flag(scheduler.rescaleBetasZeroSNR)),
        ]
    }

    /// `kiri info`'s text: the files, then `name: value` for each `m.info` field and `schedule.NAME: value`.
    public var text: String {
        var lines: [String]
        if case .network(let modelFiles) = files.layout {
            lines = ["weights: \(modelFiles.weights)", "config: \(modelFiles.config)",
                     "scheduler_config: \(modelFiles.schedulerConfig ?? "none (diffusers' defaults)")"]
        } else {
            lines = components.map { "\($0.name): \($0.description)" }
        }
        for (name, value) in info { lines.append("\(name): \(value.map(\.description) ?? "nil")") }
        for (name, value) in schedule { lines.append("schedule.\(name): \(value.map(\.description) ?? "nil")") }
        return lines.joined(separator: "\n")
    }
}

extension SchedulerConfig {
    /// The prediction type in `kiri.models.wrap`'s words.
    public var prediction: String {
        switch predictionType {
        case .epsilon: "eps"
        case .vPrediction: "v"
        case .sample: "x0"
        }
    }
}
