/// A diffusers `config.json` for `UNet2DModel` or `UNet2DConditionModel`, with diffusers' field names in camel case
/// (`block_out_channels` → `blockOutChannels`). Fields a diffusers save always writes that fix the network's shape
/// (`_class_name`, channels, block types, `layers_per_block`) are required; the rest take the defaults of the
/// class's `__init__` (diffusers/models/unets/unet_2d.py, unet_2d_condition.py), as diffusers itself does for
/// configs saved by older versions. Values selecting features Kiri does not run are refused, naming the field.
public struct UNetConfig: Sendable, Equatable {
    public enum Architecture: String, Sendable, CaseIterable {
        case unet2D = "UNet2DModel"
        case unet2DCondition = "UNet2DConditionModel"
    }

    public enum DownBlockType: String, Sendable, CaseIterable {
        case downBlock2D = "DownBlock2D"
        case attentionDownBlock2D = "AttnDownBlock2D"
        case crossAttentionDownBlock2D = "CrossAttnDownBlock2D"
    }

    public enum UpBlockType: String, Sendable, CaseIterable {
        case upBlock2D = "UpBlock2D"
        case attentionUpBlock2D = "AttnUpBlock2D"
        case crossAttentionUpBlock2D = "CrossAttnUpBlock2D"
    }

    public enum MidBlockType: String, Sendable, CaseIterable {
        case midBlock2D = "UNetMidBlock2D"
        case midBlock2DCrossAttention = "UNetMidBlock2DCrossAttn"
    }

    /// diffusers' `get_activation` names; "swish" is SiLU.
    public typealias Activation = KiriModels.Activation

    /// UNet2DModel's `downsample_type` / `upsample_type`: a strided (or nearest-upsampled) conv, or a ResNet block
    /// that resamples inside (average pooling down, nearest up).
    public enum Resampling: String, Sendable, CaseIterable {
        case conv, resnet
    }

    public var architecture: Architecture
    /// [height, width] in latent pixels; a single `sample_size` means a square.
    public var sampleSize: [Int]?
    public var inChannels: Int
    public var outChannels: Int
    public var centerInputSample: Bool
    public var flipSinToCos: Bool
    public var freqShift: Double
    public var downBlockTypes: [DownBlockType]
    /// Nil when the config says `mid_block_type: null` (no mid block).
    public var midBlockType: MidBlockType?
    public var upBlockTypes: [UpBlockType]
    public var blockOutChannels: [Int]
    /// One per down block; each up block has one more layer (diffusers).
    public var layersPerBlock: [Int]
    /// 1, or 0 for Downsample2D's one-sided pad: both halve a side. A wider pad would make the down path's sizes
    /// differ from those the up path rebuilds, which diffusers' torch.cat refuses too.
    public var downsamplePadding: Int
    public var downsampleType: Resampling
    public var upsampleType: Resampling
    public var midBlockScaleFactor: Double
    public var activation: Activation
    /// One per down block, as written. In UNet2DModel it is the size of each head (nil: one head over all
    /// channels); in UNet2DConditionModel it is the number of heads (SD 2.x: [5, 10, 20, 20], 64 channels each),
    /// because diffusers sets `num_attention_heads = num_attention_heads or attention_head_dim` and refuses a
    /// non-null `num_attention_heads` (unet_2d_condition.py, its issue #2011). Up blocks take the list reversed.
    public var attentionHeadDim: [Int]?
    public var normNumGroups: Int
    /// UNet2DModel's `attn_norm_num_groups`: a group norm inside the mid-block attention.
    public var attentionNormNumGroups: Int?
    public var normEps: Double
    /// UNet2DModel: whether the mid block has its attention layer.
    public var addAttention: Bool
    /// Class-label embedding table size (`class_embed_type` null, `num_class_embeds` set).
    public var numClassEmbeds: Int?
    /// UNet2DConditionModel: width of `encoder_hidden_states`, one per down block.
    public var crossAttentionDim: [Int]?
    /// UNet2DConditionModel: BasicTransformerBlocks per Transformer2DModel, one per down block; the mid block takes
    /// the last, the up blocks the list reversed (SDXL: [1, 2, 10]).
    public var transformerLayersPerBlock: [Int]
    /// UNet2DConditionModel, one per down block (reversed for the up blocks): each BasicTransformerBlock's attn1
    /// attends to encoder_hidden_states instead of to itself. UNetMidBlock2DCrossAttn never does (diffusers'
    /// get_mid_block passes `mid_block_only_cross_attention` only to UNetMidBlock2DSimpleCrossAttn, which Kiri does
    /// not have, so that field changes nothing here).
    public var onlyCrossAttention: [Bool]
    /// Transformer2DModel's proj_in and proj_out are Linear ([inner, C]) instead of 1×1 convs (SD 2.x).
    public var useLinearProjection: Bool
    /// Accepted and without effect: diffusers' Attention(upcast_attention=True) (SD 2.1) computes q·kᵀ in float32
    /// when the model runs in half precision, and only in AttnProcessor's get_attention_scores (AttnProcessor2_0,
    /// the default, ignores it; attention_processor.py). Kiri's attention runs in float32 throughout.
    public var upcastAttention: Bool

    // Bounds on every size a config sets (security case 36), far above published UNets (SD 1.x/2.x: 4 blocks of at
    // most 1280 channels and 2 layers; SDXL: 10 transformer layers, cross_attention_dim 2048; pixel UNets:
    // sample_size 256, 1000 classes) and low enough that nothing the network derives from them — 4 × channels,
    // blocks × layers modules, 2^(blocks - 1) — overflows or sizes a large array before the weights are checked.

    /// Channels of any kind: in, out, block_out_channels, cross_attention_dim, attention heads or head size, groups.
    public static let maximumChannels = 1 << 16
    /// Entries of block_out_channels (and so of the block type lists).
    public static let maximumBlocks = 8
    /// layers_per_block and transformer_layers_per_block.
    public static let maximumLayers = 64
    /// Each side of sample_size, in latent pixels.
    public static let maximumSampleSize = 1 << 16
    public static let maximumClasses = 100_000

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
        let conditional = architecture == .unet2DCondition
        let channels = 1...Self.maximumChannels, layers = 1...Self.maximumLayers

        inChannels = try fields.requiredInteger("in_channels", channels)
        outChannels = try fields.requiredInteger("out_channels", channels)
        blockOutChannels = try fields.requiredIntegers("block_out_channels", channels, maximumCount: Self.maximumBlocks)
        downBlockTypes = try fields.requiredChoices("down_block_types", "block type")
        upBlockTypes = try fields.requiredChoices("up_block_types", "block type")
        let blocks = blockOutChannels.count
        for (field, count) in [("down_block_types", downBlockTypes.count), ("up_block_types", upBlockTypes.count)] where count != blocks {
            throw fields.failure(field, "has \(count) blocks but 'block_out_channels' has \(blocks)")
        }
        _ = try fields.required("layers_per_block")
        layersPerBlock = try fields.perBlock("layers_per_block", blocks: blocks, default: nil, layers, allowList: conditional)!

        if let value = fields.value("mid_block_type") {
            midBlockType = try fields.choice(value, "mid_block_type", "block type")
        } else {
            midBlockType = fields.isPresent("mid_block_type") ? nil : conditional ? .midBlock2DCrossAttention : .midBlock2D
        }

        if case .array(let dimensions)? = fields.value("sample_size") {
            guard dimensions.count == 2 else { throw fields.failure("sample_size", "must be an integer or [height, width]") }
            var size: [Int] = []
            for (index, value) in dimensions.enumerated() {
                let field = "sample_size[\(index)]"
                size.append(try fields.within(1...Self.maximumSampleSize, fields.integer(value, field), field))
            }
            sampleSize = size
        } else {
            sampleSize = try fields.optionalInteger("sample_size", 1...Self.maximumSampleSize).map { [$0, $0] }
        }

        centerInputSample = try fields.bool("center_input_sample", default: false)
        flipSinToCos = try fields.bool("flip_sin_to_cos", default: true)
        freqShift = try fields.double("freq_shift", default: 0)
        downsamplePadding = try fields.integer("downsample_padding", default: 1, 0...1)
        downsampleType = try fields.choice("downsample_type", default: .conv)
        upsampleType = try fields.choice("upsample_type", default: .conv)
        midBlockScaleFactor = try fields.double("mid_block_scale_factor", default: 1)
        activation = try fields.choice("act_fn", default: .silu)
        normNumGroups = try fields.integer("norm_num_groups", default: 32, channels)
        attentionNormNumGroups = try fields.optionalInteger("attn_norm_num_groups", channels)
        normEps = try fields.double("norm_eps", default: 1e-5)
        addAttention = try fields.bool("add_attention", default: true)
        numClassEmbeds = try fields.optionalInteger("num_class_embeds", 1...Self.maximumClasses)
        useLinearProjection = try fields.bool("use_linear_projection", default: false)
        upcastAttention = try fields.bool("upcast_attention", default: false)

        if conditional {
            attentionHeadDim = try fields.perBlock("attention_head_dim", blocks: blocks, default: 8, channels)
            if fields.isPresent("attention_head_dim"), fields.value("attention_head_dim") == nil {
                throw fields.failure("attention_head_dim", "is null, but UNet2DConditionModel needs it (it is the number of heads)")
            }
            crossAttentionDim = try fields.perBlock("cross_attention_dim", blocks: blocks, default: 1280, channels)
            transformerLayersPerBlock = try fields.perBlock("transformer_layers_per_block", blocks: blocks, default: 1, layers)!
            onlyCrossAttention = try fields.perBlockFlags("only_cross_attention", blocks: blocks, default: false)
            if let heads = fields.value("num_attention_heads") {
                throw fields.failure("num_attention_heads", "is \(ConfigFields.describe(heads)), which diffusers' UNet2DConditionModel "
                    + "refuses too (its issue #2011): attention_head_dim gives the number of heads")
            }
        } else {
            attentionHeadDim = try fields.perBlock("attention_head_dim", blocks: blocks, default: fields.isPresent("attention_head_dim") ? nil : 8,
                                                 channels, allowList: false)
            crossAttentionDim = nil
            transformerLayersPerBlock = Array(repeating: 1, count: blocks)
            onlyCrossAttention = Array(repeating: false, count: blocks)
        }

        try checkBlocks(fields)
        try refuseUnsupported(fields)
    }

    /// What diffusers would reject when building the modules: cross-attention blocks without a conditional UNet,
    /// and group norms whose groups do not divide the channels.
    private func checkBlocks(_ fields: ConfigFields) throws(ModelFileError) {
        if architecture == .unet2D {
            for (index, type) in downBlockTypes.enumerated() where type == .crossAttentionDownBlock2D {
                throw fields.failure("down_block_types[\(index)]", "is CrossAttnDownBlock2D, which needs a UNet2DConditionModel")
            }
            for (index, type) in upBlockTypes.enumerated() where type == .crossAttentionUpBlock2D {
                throw fields.failure("up_block_types[\(index)]", "is CrossAttnUpBlock2D, which needs a UNet2DConditionModel")
            }
            if midBlockType == .midBlock2DCrossAttention {
                throw fields.failure("mid_block_type", "is UNetMidBlock2DCrossAttn, which needs a UNet2DConditionModel")
            }
        }
        for (index, channels) in blockOutChannels.enumerated() where channels % normNumGroups != 0 {
            throw fields.failure("norm_num_groups", "(\(normNumGroups)) does not divide block_out_channels[\(index)] (\(channels))")
        }
        if let attentionNormNumGroups, let channels = blockOutChannels.last, channels % attentionNormNumGroups != 0 {
            throw fields.failure("attn_norm_num_groups", "(\(attentionNormNumGroups)) does not divide the mid block's \(channels) channels")
        }
    }

    /// Fields whose non-default values select modules Kiri does not have (SDXL's added embeddings, Fourier time
    /// embedding, scale-shift ResNets, ...). Each is checked only when present.
    private func refuseUnsupported(_ fields: ConfigFields) throws(ModelFileError) {
        let null = JSONValue.null, no = JSONValue.bool(false)
        try fields.requireDefault("time_embedding_type", [.string("positional")])
        try fields.requireDefault("time_embedding_dim", [null])
        try fields.requireDefault("class_embed_type", [null])
        try fields.requireDefault("resnet_time_scale_shift", [.string("default")])
        guard architecture == .unet2DCondition else { return }
        for field in ["addition_embed_type", "encoder_hid_dim", "encoder_hid_dim_type", "time_cond_proj_dim",
                      "time_embedding_act_fn", "timestep_post_act", "projection_class_embeddings_input_dim",
                      "cross_attention_norm", "reverse_transformer_layers_per_block"] {
            try fields.requireDefault(field, [null])
        }
        for field in ["dual_cross_attention", "class_embeddings_concat", "resnet_skip_time_act"] {
            try fields.requireDefault(field, [no])
        }
        try fields.requireDefault("conv_in_kernel", [.number("3")])
        try fields.requireDefault("conv_out_kernel", [.number("3")])
        try fields.requireDefault("resnet_out_scale_factor", [.number("1")])
        try fields.requireDefault("attention_type", [.string("default")])
    }
}
