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

    public let files: ModelFiles
    public let config: UNetConfig
    /// The model's scheduler config, or diffusers' defaults when it has none.
    public let scheduler: SchedulerConfig
    /// Elements in the weights file (for a diffusers save, the network's parameters).
    public let parameterCount: Int
    public let dtype: DType?

    /// Reads the configs and the weights file's header (`weights`, when the caller has it open already).
    public init(files: ModelFiles, weights: SafetensorsFile? = nil) throws(ModelFileError) {
        self.files = files
        config = try UNetConfig(path: files.config)
        if let path = files.schedulerConfig {
            scheduler = try SchedulerConfig(path: path)
        } else {
            scheduler = SchedulerConfig()
        }
        let file: SafetensorsFile
        if let weights {
            file = weights
        } else {
            file = try SafetensorsFile(path: files.weights)
        }
        parameterCount = file.parameterCount
        dtype = file.storageDType
    }

    /// The scheduler's prediction type in `kiri.models.wrap`'s words.
    public var prediction: String {
        switch scheduler.predictionType {
        case .epsilon: "eps"
        case .vPrediction: "v"
        case .sample: "x0"
        }
    }

    /// `m.info`, in the order `kiri info` prints it; nil values are absent (nil in Lua).
    public var info: [(name: String, value: Value?)] {
        [
            ("architecture", .text(config.architecture.rawValue)),
            ("parameters", .integer(parameterCount)),
            ("dtype", dtype.map { .text($0.rawValue) }),
            ("prediction", .text(prediction)),
            ("prediction_type", .text(scheduler.predictionType.rawValue)),
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
    public var schedule: [(name: String, value: Value?)] {
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
        var lines = [
            "weights: \(files.weights)",
            "config: \(files.config)",
            "scheduler_config: \(files.schedulerConfig ?? "none (diffusers' defaults)")",
        ]
        for (name, value) in info { lines.append("\(name): \(value.map(\.description) ?? "nil")") }
        for (name, value) in schedule { lines.append("schedule.\(name): \(value.map(\.description) ?? "nil")") }
        return lines.joined(separator: "\n")
    }
}
