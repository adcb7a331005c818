/// A diffusers `vae/config.json` for `AutoencoderKL` (models/autoencoders/autoencoder_kl.py), with diffusers' field
/// names in camel case. Fields that fix the network's shape are required, as in `UNetConfig`; the rest take the
/// defaults of `AutoencoderKL.__init__`. `force_upcast` is read by pipelines to run the VAE in float32, which Kiri
/// always does, so it is ignored.
public struct AutoencoderKLConfig: Sendable, Equatable {
    public enum Architecture: String, Sendable, CaseIterable {
        case autoencoderKL = "AutoencoderKL"
    }

    /// The only encoder block AutoencoderKL's Encoder builds its checkpoints with (ResNets, then Downsample2D).
    public enum DownBlockType: String, Sendable, CaseIterable {
        case downEncoderBlock2D = "DownEncoderBlock2D"
    }

    /// The only decoder block (ResNets, then Upsample2D).
    public enum UpBlockType: String, Sendable, CaseIterable {
        case upDecoderBlock2D = "UpDecoderBlock2D"
    }

    public var architecture: Architecture
    /// Image channels in and out (3 for RGB).
    public var inChannels: Int
    public var outChannels: Int
    public var latentChannels: Int
    public var downBlockTypes: [DownBlockType]
    public var upBlockTypes: [UpBlockType]
    public var blockOutChannels: [Int]
    /// ResNets per encoder block; each decoder block has one more (diffusers).
    public var layersPerBlock: Int
    public var normNumGroups: Int
    /// The ResNets' activation; the encoder's and decoder's conv_act is always SiLU (vae.py).
    public var activation: UNetConfig.Activation
    /// [height, width] in image pixels; diffusers' default tile size (`tile_sample_min_size`) is its height.
    public var sampleSize: [Int]
    /// Pipelines scale latents as (mean - shift) · scaling before diffusion and undo it before decoding.
    public var scalingFactor: Double
    public var shiftFactor: Double?
    public var useQuantConv: Bool
    public var usePostQuantConv: Bool
    /// Whether the encoder's and decoder's mid blocks have their attention layer.
    public var midBlockAddAttention: Bool

    // Bounds as UNetConfig's: far above published VAEs (SD 1.x/2.x/XL: 4 blocks of at most 512 channels, 2 layers;
    // SD3/Flux: 16 latent channels), low enough that nothing derived from them overflows before the weights are
    // checked (security case 36).
    public static let maximumChannels = UNetConfig.maximumChannels
    public static let maximumBlocks = UNetConfig.maximumBlocks
    public static let maximumLayers = UNetConfig.maximumLayers
    public static let maximumSampleSize = UNetConfig.maximumSampleSize

    /// Reads and checks `path` (a `config.json`).
    public init(path: String) throws(ModelFileError) {
        try self.init(ConfigFields(path: path))
    }

    /// Checks a config already parsed; `path` names it in errors.
    public init(json: JSONValue, path: String) throws(ModelFileError) {
        try self.init(ConfigFields(path: path, json: json))
    }

    init(_ fields: ConfigFields) throws(ModelFileError) {
        architecture = try fields.choice(fields.required("_class_name"), "_class_name", "model class")
        let channels = 1...Self.maximumChannels

        inChannels = try fields.requiredInteger("in_channels", channels)
        outChannels = try fields.requiredInteger("out_channels", channels)
        latentChannels = try fields.requiredInteger("latent_channels", channels)
        blockOutChannels = try fields.requiredIntegers("block_out_channels", channels, maximumCount: Self.maximumBlocks)
        downBlockTypes = try fields.requiredChoices("down_block_types", "block type")
        upBlockTypes = try fields.requiredChoices("up_block_types", "block type")
        let blocks = blockOutChannels.count
        for (field, count) in [("down_block_types", downBlockTypes.count), ("up_block_types", upBlockTypes.count)] where count != blocks {
            throw fields.failure(field, "has \(count) blocks but 'block_out_channels' has \(blocks)")
        }
        layersPerBlock = try fields.requiredInteger("layers_per_block", 1...Self.maximumLayers)
        normNumGroups = try fields.integer("norm_num_groups", default: 32, channels)
        for (index, channels) in blockOutChannels.enumerated() where channels % normNumGroups != 0 {
            throw fields.failure("norm_num_groups", "(\(normNumGroups)) does not divide block_out_channels[\(index)] (\(channels))")
        }
        activation = try fields.choice("act_fn", default: .silu)

        if case .array(let dimensions)? = fields.value("sample_size") {
            guard dimensions.count == 2 else { throw fields.failure("sample_size", "must be an integer or [height, width]") }
            var size: [Int] = []
            for (index, value) in dimensions.enumerated() {
                let field = "sample_size[\(index)]"
                size.append(try fields.within(1...Self.maximumSampleSize, fields.integer(value, field), field))
            }
            sampleSize = size
        } else {
            let side = try fields.integer("sample_size", default: 32, 1...Self.maximumSampleSize)
            sampleSize = [side, side]
        }

        scalingFactor = try fields.double("scaling_factor", default: 0.18215)
        guard scalingFactor != 0 else { throw fields.failure("scaling_factor", "is 0; decoding divides by it") }
        shiftFactor = fields.value("shift_factor") == nil ? nil : try fields.double("shift_factor", default: 0)
        useQuantConv = try fields.bool("use_quant_conv", default: true)
        usePostQuantConv = try fields.bool("use_post_quant_conv", default: true)
        midBlockAddAttention = try fields.bool("mid_block_add_attention", default: true)
        // Per-channel latent statistics change how a pipeline scales latents; ignoring them would scale silently wrong.
        try fields.requireDefault("latents_mean", [.null])
        try fields.requireDefault("latents_std", [.null])
    }

    /// Pixels per latent pixel along each side: every encoder block but the last halves the image.
    public var downscaleFactor: Int { 1 << (blockOutChannels.count - 1) }
}
