/// A diffusers `scheduler/scheduler_config.json`: what a denoiser needs from the training schedule (the betas that
/// give alphas_cumprod, and what the network predicts). Every field is optional, with the defaults of diffusers'
/// schedulers; sampler-specific fields (solver order, clipping, ...) are left to the Lua samplers.
public struct SchedulerConfig: Sendable, Equatable {
    /// The schedules `Plugins/lib/schedule.lua` builds (diffusers `betas` in scheduling_ddpm.py).
    public enum BetaSchedule: String, Sendable, CaseIterable {
        case linear
        case scaledLinear = "scaled_linear"
        case squaredCosineCapV2 = "squaredcos_cap_v2"
    }

    public enum PredictionType: String, Sendable, CaseIterable {
        case epsilon
        case vPrediction = "v_prediction"
        case sample
    }

    public enum TimestepSpacing: String, Sendable, CaseIterable {
        case leading, trailing, linspace
    }

    /// Schedulers whose `timestep_spacing` defaults to "leading"; the others (Euler, Heun, LMS, DPM-Solver,
    /// UniPC, DEIS, ...) default to "linspace".
    static let leadingByDefault: Set<String> = ["DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "LCMScheduler", "TCDScheduler"]

    /// `_class_name`, e.g. "PNDMScheduler".
    public var className: String?
    public var numTrainTimesteps: Int
    public var betaStart: Double
    public var betaEnd: Double
    public var betaSchedule: BetaSchedule
    /// Explicit betas, one per training timestep; they replace the schedule when present.
    public var trainedBetas: [Double]?
    public var predictionType: PredictionType
    public var timestepSpacing: TimestepSpacing
    public var stepsOffset: Int
    public var rescaleBetasZeroSNR: Bool

    /// Bound on num_train_timesteps and steps_offset (security case 36): 100× the 1000 every published model uses,
    /// so that a schedule of that length stays a small array.
    public static let maximumTrainTimesteps = 100_000

    /// diffusers' defaults, for a model that ships no scheduler config.
    public init() {
        className = nil
        numTrainTimesteps = 1000
        betaStart = 0.0001
        betaEnd = 0.02
        betaSchedule = .linear
        trainedBetas = nil
        predictionType = .epsilon
        timestepSpacing = .leading
        stepsOffset = 0
        rescaleBetasZeroSNR = false
    }

    /// The same defaults as a scheduler_config.json (diffusers' DDPMScheduler's), for a network saved without one.
    public static let defaultJSON = JSONValue.config([
        ("_class_name", .string("DDPMScheduler")), ("beta_end", .number("0.02")), ("beta_schedule", .string("linear")),
        ("beta_start", .number("0.0001")), ("num_train_timesteps", .integer(1000)), ("prediction_type", .string("epsilon")),
    ])

    public init(path: String) throws(ModelFileError) {
        try self.init(ConfigFields(path: path))
    }

    public init(json: JSONValue, path: String) throws(ModelFileError) {
        try self.init(ConfigFields(path: path, json: json))
    }

    init(_ fields: ConfigFields) throws(ModelFileError) {
        self.init()
        className = try fields.optionalString("_class_name")
        numTrainTimesteps = try fields.integer("num_train_timesteps", default: 1000, 1...Self.maximumTrainTimesteps)
        betaStart = try fields.double("beta_start", default: 0.0001)
        betaEnd = try fields.double("beta_end", default: 0.02)
        for (field, beta) in [("beta_start", betaStart), ("beta_end", betaEnd)] where !(0..<1).contains(beta) {
            throw fields.failure(field, "must be in [0, 1), got \(beta)")
        }
        betaSchedule = try fields.choice("beta_schedule", default: .linear)
        trainedBetas = try fields.doubles("trained_betas")
        if let trainedBetas {
            guard trainedBetas.count == numTrainTimesteps else {
                throw fields.failure("trained_betas", "has \(trainedBetas.count) values but num_train_timesteps is \(numTrainTimesteps)")
            }
            if let index = trainedBetas.firstIndex(where: { !(0..<1).contains($0) }) {
                throw fields.failure("trained_betas[\(index)]", "must be in [0, 1), got \(trainedBetas[index])")
            }
        }
        predictionType = try fields.choice("prediction_type", default: .epsilon)
        let spacing: TimestepSpacing = (className.map { Self.leadingByDefault.contains($0) } ?? true) ? .leading : .linspace
        timestepSpacing = try fields.choice("timestep_spacing", default: spacing)
        stepsOffset = try fields.integer("steps_offset", default: 0, 0...Self.maximumTrainTimesteps)
        rescaleBetasZeroSNR = try fields.bool("rescale_betas_zero_snr", default: false)
    }
}
