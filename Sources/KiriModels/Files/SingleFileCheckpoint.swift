import Foundation
import KiriTensor

/// A Stable Diffusion 1.x or 2.x checkpoint in one file, in the key layout of CompVis' scripts and A1111
/// (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`), shown as the diffusers components the
/// networks load: each a `TensorMap` under diffusers' or transformers' keys, with the config diffusers would use.
/// The family and configs come from keys and shapes alone, as diffusers' from_single_file
/// (diffusers/loaders/single_file_utils.py, infer_diffusers_model_type) and ComfyUI's detection
/// (comfy/model_detection.py detect_unet_config, comfy/supported_models.py SD15/SD20) infer them.
public final class SingleFileCheckpoint {
    public enum Family: String, Sendable, CaseIterable {
        /// CLIP ViT-L text encoder (768 wide), 8 heads per attention, epsilon.
        case sd1
        /// OpenCLIP ViT-H text encoder (1024 wide) from its penultimate layer, heads of 64 channels, linear
        /// projections; epsilon or v-prediction.
        case sd2
    }

    public let file: SafetensorsFile
    public let family: Family
    public let predictionType: SchedulerConfig.PredictionType
    /// `UNet2DConditionModel` keys.
    public let unet: TensorMap
    /// `AutoencoderKL` keys.
    public let vae: TensorMap
    /// `CLIPTextModel` keys, with their `text_model.` prefix.
    public let textEncoder: TensorMap
    /// The configs as diffusers and transformers write them: `unet/config.json`, `vae/config.json`,
    /// `text_encoder/config.json`, `scheduler/scheduler_config.json`.
    public let unetConfigText: String
    public let vaeConfigText: String
    public let textEncoderConfigText: String
    public let schedulerConfigText: String
    /// The first and last of those, read by the same parser as a diffusers folder's files.
    public let unetConfig: UNetConfig
    public let schedulerConfig: SchedulerConfig

    public convenience init(path: String) throws(ModelFileError) {
        try self.init(SafetensorsFile(path: path))
    }

    public init(_ file: SafetensorsFile) throws(ModelFileError) {
        self.file = file
        let shapes = Shapes(file)
        try Self.refuseOtherFamilies(file)
        let layout = try UNetLayout(shapes)
        let text = try TextLayout(shapes, contextKey: layout.contextKey, contextDimension: layout.contextDimension)
        family = text.family
        let vaeLayout = try VAELayout(shapes)
        predictionType = try Self.predictionType(file, family: family, layout: layout)

        unet = TensorMap(file, SingleFileKeys.unet(file, layers: layout.layers))
        vae = TensorMap(file, SingleFileKeys.vae(file, levels: vaeLayout.channels.count))
        textEncoder = TensorMap(file, family == .sd1 ? SingleFileKeys.clip(file)
                                                     : SingleFileKeys.openCLIP(file, layers: text.layers))

        // SD 1.x and 2-base are trained at 512 pixels, 2.x v-prediction at 768 (diffusers' set_image_size).
        let imageSize = predictionType == .vPrediction ? 768 : 512
        let unetJSON = layout.config(family: family, sampleSize: imageSize / 8)
        let schedulerJSON = Self.schedulerConfig(predictionType)
        unetConfigText = unetJSON.configText
        vaeConfigText = vaeLayout.config(sampleSize: imageSize).configText
        textEncoderConfigText = text.config.configText
        schedulerConfigText = schedulerJSON.configText
        unetConfig = try UNetConfig(json: unetJSON, path: "\(file.path) (inferred unet/config.json)")
        schedulerConfig = try SchedulerConfig(json: schedulerJSON, path: "\(file.path) (inferred scheduler_config.json)")
    }

    /// A VAE file on its own (`vae=PATH`, A1111's "SD VAE"): in LDM's layout, as A1111's VAE files are (with or
    /// without `first_stage_model.`), or in diffusers' (then with `config.json` beside it, or `fallback`, the
    /// pipeline's own VAE config). Returns its tensors under diffusers' keys and its config.
    public static func standaloneVAE(_ file: SafetensorsFile, fallback: AutoencoderKLConfig?) throws(ModelFileError)
        -> (weights: any TensorSource, config: AutoencoderKLConfig) {
        for prefix in ["", SingleFileKeys.vaePrefix] where file.info(prefix + "encoder.down.0.block.0.conv2.weight") != nil {
            let layout = try VAELayout(Shapes(file), prefix: prefix)
            let config = try AutoencoderKLConfig(json: layout.config(sampleSize: 512), path: "\(file.path) (inferred vae/config.json)")
            return (TensorMap(file, SingleFileKeys.vae(file, levels: layout.channels.count, prefix: prefix)), config)
        }
        guard file.info("encoder.down_blocks.0.resnets.0.conv1.weight") != nil else {
            throw ModelFileError(file.path, "not a VAE: it has neither LDM's 'encoder.down.0.block.0.conv2.weight' nor diffusers' 'encoder.down_blocks.0.resnets.0.conv1.weight'")
        }
        let beside = ModelFiles.folder(of: file.path) + "/config.json"
        if FileManager.default.fileExists(atPath: beside) { return (file, try AutoencoderKLConfig(path: beside)) }
        guard let fallback else { throw ModelFileError(file.path, "a diffusers VAE needs its config.json beside it") }
        return (file, fallback)
    }

    /// Keys only other families have, checked first so that the error names what the file is.
    private static func refuseOtherFamilies(_ file: SafetensorsFile) throws(ModelFileError) {
        if let key = file.names.first(where: { $0.hasPrefix("conditioner.embedders.") }) {
            throw ModelFileError(file.path, "unsupported model family: '\(key)' belongs to SDXL's text conditioner (Kiri reads SD 1.x and 2.x single files)")
        }
        let classEmbedding = SingleFileKeys.unetPrefix + "label_emb.0.0.weight"
        if file.info(classEmbedding) != nil {
            throw ModelFileError(file.path, "unsupported model family: '\(classEmbedding)' is the class embedding of SDXL or unCLIP (Kiri reads SD 1.x and 2.x single files)")
        }
        guard file.names.contains(where: { $0.hasPrefix(SingleFileKeys.unetPrefix) }) else {
            let found = file.names.prefix(3).map { "'\($0)'" }.joined(separator: ", ")
            let diffusers = file.info("conv_in.weight") != nil ? "; it looks like one diffusers model, which loads from its folder with config.json" : ""
            throw ModelFileError(file.path, "not a Stable Diffusion single-file checkpoint: no '\(SingleFileKeys.unetPrefix)*' keys (found \(found.isEmpty ? "no tensors" : found))\(diffusers)")
        }
    }

    /// ComfyUI's test (comfy/supported_models.py, SD20.model_type): an SD 2.x UNet with 4 input channels predicts
    /// v when the population std of its last output block's first norm1.bias (`output_blocks.11` in SD2) is above
    /// 0.09; inpainting UNets and SD 1.x predict epsilon. A `v_pred` key, ComfyUI's marker for SDXL, also means v.
    static func predictionType(_ file: SafetensorsFile, family: Family, layout: UNetLayout)
        throws(ModelFileError) -> SchedulerConfig.PredictionType
    {
        if file.info("v_pred") != nil { return .vPrediction }
        guard family == .sd2, layout.inChannels == 4 else { return .epsilon }
        let last = layout.layers.reduce(0) { $0 + $1 + 1 } - 1
        let key = "\(SingleFileKeys.unetPrefix)output_blocks.\(last).1.transformer_blocks.0.norm1.bias"
        guard file.info(key) != nil else { return .epsilon }
        let bias = try file.tensor(key)
        return standardDeviation(UnsafeBufferPointer(start: bias.data, count: bias.count)) > 0.09 ? .vPrediction : .epsilon
    }

    /// Population standard deviation (torch.std with unbiased=False), in Double.
    static func standardDeviation(_ values: UnsafeBufferPointer<Float>) -> Double {
        guard !values.isEmpty else { return 0 }
        let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
        let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)
        return variance.squareRoot()
    }

    /// SD's training schedule as diffusers writes it for a single file (single_file_utils.py,
    /// SCHEDULER_DEFAULT_CONFIG).
    static func schedulerConfig(_ prediction: SchedulerConfig.PredictionType) -> JSONValue {
        .config([
            ("_class_name", .string("PNDMScheduler")), ("beta_end", .number("0.012")),
            ("beta_schedule", .string("scaled_linear")), ("beta_start", .number("0.00085")),
            ("num_train_timesteps", .number("1000")), ("prediction_type", .string(prediction.rawValue)),
            ("set_alpha_to_one", .bool(false)), ("skip_prk_steps", .bool(true)), ("steps_offset", .number("1")),
            ("timestep_spacing", .string("leading")),
        ])
    }
}

/// Shapes of a file's tensors, where a missing or oddly ranked tensor is an error naming its key.
struct Shapes {
    let file: SafetensorsFile

    init(_ file: SafetensorsFile) { self.file = file }

    func contains(_ key: String) -> Bool { file.info(key) != nil }

    func optional(_ key: String, rank: Int) throws(ModelFileError) -> [Int]? {
        guard let shape = file.info(key)?.shape else { return nil }
        guard shape.count == rank else {
            throw ModelFileError(file.path, "tensor '\(key)' has shape \(shapeString(shape)), not of rank \(rank)")
        }
        return shape
    }

    func required(_ key: String, rank: Int) throws(ModelFileError) -> [Int] {
        guard let shape = try optional(key, rank: rank) else {
            throw ModelFileError(file.path, "missing tensor '\(key)', which a Stable Diffusion single-file checkpoint has")
        }
        return shape
    }

    /// How many of `key(0)`, `key(1)`, ... exist, counting up to the first gap.
    func count(_ key: (Int) -> String) -> Int {
        var count = 0
        while contains(key(count)) { count += 1 }
        return count
    }
}

/// The UNet's structure from its keys, walking the input blocks as ComfyUI's detect_unet_config does: a resnet
/// (`input_blocks.N.0.in_layers`) adds a layer to the current level, a downsampler (`input_blocks.N.0.op`) closes it.
struct UNetLayout {
    var inChannels: Int, outChannels: Int
    var channels: [Int] = [], layers: [Int] = [], hasAttention: [Bool] = [], transformerDepth: [Int] = []
    var hasMidAttention: Bool
    var linearProjection = false
    /// From the first attention's `attn2.to_k.weight` [C, context].
    var contextKey = "", contextDimension = 0

    init(_ shapes: Shapes) throws(ModelFileError) {
        let prefix = SingleFileKeys.unetPrefix
        inChannels = try shapes.required(prefix + "input_blocks.0.0.weight", rank: 4)[1]
        outChannels = try shapes.required(prefix + "out.2.weight", rank: 4)[0]
        hasMidAttention = shapes.contains(prefix + "middle_block.1.proj_in.weight")
        var index = 1, layersInLevel = 0
        while true {
            let block = "\(prefix)input_blocks.\(index)."
            index += 1
            if shapes.contains(block + "0.op.weight") {
                layers.append(layersInLevel)
                layersInLevel = 0
                continue
            }
            guard let resnet = try shapes.optional(block + "0.out_layers.3.weight", rank: 4) else { break }
            layersInLevel += 1
            guard layersInLevel == 1 else { continue }
            channels.append(resnet[0])
            let attention = block + "1."
            hasAttention.append(shapes.contains(attention + "proj_in.weight"))
            transformerDepth.append(shapes.count { "\(attention)transformer_blocks.\($0).norm1.weight" })
            guard hasAttention.last!, contextKey.isEmpty else { continue }
            linearProjection = shapes.file.info(attention + "proj_in.weight")!.shape.count == 2
            contextKey = attention + "transformer_blocks.0.attn2.to_k.weight"
            contextDimension = try shapes.required(contextKey, rank: 2)[1]
        }
        if layersInLevel > 0 { layers.append(layersInLevel) }
        guard !channels.isEmpty, channels.count == layers.count else {
            throw ModelFileError(shapes.file.path, "missing tensor '\(prefix)input_blocks.1.0.out_layers.3.weight', which a Stable Diffusion single-file checkpoint has")
        }
        guard !contextKey.isEmpty else {
            throw ModelFileError(shapes.file.path, "missing tensor '\(prefix)input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight': the UNet has no cross-attention, which SD 1.x and 2.x have")
        }
    }

    /// diffusers' `unet/config.json`. Heads are not in the weights: SD 1.x has 8 per attention (its
    /// attention_head_dim 8), SD 2.x heads of 64 channels (attention_head_dim [5, 10, 20, 20]), as ComfyUI's
    /// num_heads / num_head_channels; a level narrower than 64 channels (only tiny test models) gets one head.
    func config(family: SingleFileCheckpoint.Family, sampleSize: Int) -> JSONValue {
        let heads: JSONValue = family == .sd1 ? .integer(8) : .array(channels.map { .integer(max(1, $0 / 64)) })
        return .config([
            ("_class_name", .string("UNet2DConditionModel")), ("act_fn", .string("silu")), ("attention_head_dim", heads),
            ("block_out_channels", .array(channels.map(JSONValue.integer))), ("center_input_sample", .bool(false)),
            ("cross_attention_dim", .integer(contextDimension)),
            ("down_block_types", .array(hasAttention.map { .string($0 ? "CrossAttnDownBlock2D" : "DownBlock2D") })),
            ("downsample_padding", .integer(1)), ("flip_sin_to_cos", .bool(true)), ("freq_shift", .integer(0)),
            ("in_channels", .integer(inChannels)), ("layers_per_block", .perLevel(layers)),
            ("mid_block_scale_factor", .integer(1)),
            ("mid_block_type", .string(hasMidAttention ? "UNetMidBlock2DCrossAttn" : "UNetMidBlock2D")),
            ("norm_eps", .number("1e-05")), ("norm_num_groups", .integer(32)), ("out_channels", .integer(outChannels)),
            ("sample_size", .integer(sampleSize)), ("transformer_layers_per_block", .perLevel(transformerDepth.map { max(1, $0) })),
            ("up_block_types", .array(hasAttention.reversed().map { .string($0 ? "CrossAttnUpBlock2D" : "UpBlock2D") })),
            ("use_linear_projection", .bool(linearProjection)),
        ])
    }
}

/// The text encoder's layout decides the family (diffusers' is_clip_model / is_open_clip_model keys); without
/// one, the UNet's context width names what the file is (768 SD 1.x, 1024 SD 2.x, as infer_diffusers_model_type).
struct TextLayout {
    var family: SingleFileCheckpoint.Family
    var hidden: Int, intermediate: Int, layers: Int, positions: Int, vocabulary: Int

    init(_ shapes: Shapes, contextKey: String, contextDimension: Int) throws(ModelFileError) {
        let path = shapes.file.path
        let clip = SingleFileKeys.clipPrefix, openCLIP = SingleFileKeys.openCLIPPrefix
        if shapes.file.names.contains(where: { $0.hasPrefix(clip) }) {
            family = .sd1
            let base = shapes.file.names.contains { $0.hasPrefix(clip + "text_model.") } ? clip + "text_model." : clip
            let tokens = try shapes.required(base + "embeddings.token_embedding.weight", rank: 2)
            (vocabulary, hidden) = (tokens[0], tokens[1])
            positions = try shapes.required(base + "embeddings.position_embedding.weight", rank: 2)[0]
            layers = shapes.count { "\(base)encoder.layers.\($0).self_attn.q_proj.weight" }
            intermediate = try shapes.required(base + "encoder.layers.0.mlp.fc1.weight", rank: 2)[0]
        } else if shapes.file.names.contains(where: { $0.hasPrefix(openCLIP) }) {
            family = .sd2
            let tokens = try shapes.required(openCLIP + "token_embedding.weight", rank: 2)
            (vocabulary, hidden) = (tokens[0], tokens[1])
            positions = try shapes.required(openCLIP + "positional_embedding", rank: 2)[0]
            let resblocks = shapes.count { "\(openCLIP)transformer.resblocks.\($0).attn.in_proj_weight" }
            layers = resblocks - 1
            intermediate = try shapes.required(openCLIP + "transformer.resblocks.0.mlp.c_fc.weight", rank: 2)[0]
            for resblock in 0..<resblocks {
                let key = "\(openCLIP)transformer.resblocks.\(resblock).attn.in_proj_weight"
                let shape = try shapes.required(key, rank: 2)
                guard shape == [3 * hidden, hidden] else {
                    throw ModelFileError(path, "tensor '\(key)' has shape \(shapeString(shape)) but q, k and v of width \(hidden) need [\(3 * hidden), \(hidden)]")
                }
            }
        } else if contextDimension == 768 || contextDimension == 1024 {
            throw ModelFileError(path, "missing the text encoder: no '\(clip)*' (SD 1.x) or '\(openCLIP)*' (SD 2.x) keys")
        } else {
            throw ModelFileError(path, "unsupported model family: '\(contextKey)' gives a cross-attention width of \(contextDimension) and there is no SD text encoder (Kiri reads SD 1.x, 768 wide, and SD 2.x, 1024 wide)")
        }
        guard layers >= 1 else {
            throw ModelFileError(path, "missing tensor '\(family == .sd1 ? clip + "text_model.encoder.layers.0.self_attn.q_proj.weight" : openCLIP + "transformer.resblocks.1.attn.in_proj_weight")': the text encoder has no layers")
        }
        guard hidden == contextDimension else {
            throw ModelFileError(path, "the text encoder is \(hidden) wide but '\(contextKey)' expects a context of \(contextDimension)")
        }
    }

    /// transformers' `text_encoder/config.json` for CLIPTextModel: heads of 64 channels (ViT-L 12, ViT-H 16;
    /// one for a narrower test model), CLIP's quick_gelu for SD 1.x and OpenCLIP's gelu for SD 2.x, and the
    /// token ids of both published configs.
    var config: JSONValue {
        .config([
            ("architectures", .array([.string("CLIPTextModel")])), ("bos_token_id", .integer(0)),
            ("eos_token_id", .integer(2)), ("hidden_act", .string(family == .sd1 ? "quick_gelu" : "gelu")),
            ("hidden_size", .integer(hidden)), ("intermediate_size", .integer(intermediate)),
            ("layer_norm_eps", .number("1e-05")), ("max_position_embeddings", .integer(positions)),
            ("model_type", .string("clip_text_model")), ("num_attention_heads", .integer(max(1, hidden / 64))),
            ("num_hidden_layers", .integer(layers)), ("pad_token_id", .integer(1)), ("vocab_size", .integer(vocabulary)),
        ])
    }
}

/// The VAE's structure from its keys (diffusers' create_vae_diffusers_config_from_ldm reads the same numbers from
/// the original YAML: ch × ch_mult, num_res_blocks, z_channels).
struct VAELayout {
    var inChannels: Int, outChannels: Int, latentChannels: Int, layers: Int
    var channels: [Int] = []
    var hasMidAttention: Bool, hasQuantConv: Bool, hasPostQuantConv: Bool

    init(_ shapes: Shapes, prefix: String = SingleFileKeys.vaePrefix) throws(ModelFileError) {
        inChannels = try shapes.required(prefix + "encoder.conv_in.weight", rank: 4)[1]
        outChannels = try shapes.required(prefix + "decoder.conv_out.weight", rank: 4)[0]
        latentChannels = try shapes.required(prefix + "decoder.conv_in.weight", rank: 4)[1]
        let levels = shapes.count { "\(prefix)encoder.down.\($0).block.0.conv2.weight" }
        for level in 0..<levels {
            channels.append(try shapes.required("\(prefix)encoder.down.\(level).block.0.conv2.weight", rank: 4)[0])
        }
        guard levels > 0 else {
            throw ModelFileError(shapes.file.path, "missing tensor '\(prefix)encoder.down.0.block.0.conv2.weight', which a Stable Diffusion single-file checkpoint has")
        }
        layers = shapes.count { "\(prefix)encoder.down.0.block.\($0).conv1.weight" }
        hasMidAttention = shapes.contains(prefix + "encoder.mid.attn_1.q.weight")
        hasQuantConv = shapes.contains(prefix + "quant_conv.weight")
        hasPostQuantConv = shapes.contains(prefix + "post_quant_conv.weight")
    }

    /// diffusers' `vae/config.json`, with SD's latent scaling 0.18215 (LDM_VAE_DEFAULT_SCALING_FACTOR).
    func config(sampleSize: Int) -> JSONValue {
        .config([
            ("_class_name", .string("AutoencoderKL")), ("act_fn", .string("silu")),
            ("block_out_channels", .array(channels.map(JSONValue.integer))),
            ("down_block_types", .array(channels.map { _ in .string("DownEncoderBlock2D") })),
            ("in_channels", .integer(inChannels)), ("latent_channels", .integer(latentChannels)),
            ("layers_per_block", .integer(layers)), ("mid_block_add_attention", .bool(hasMidAttention)),
            ("norm_num_groups", .integer(32)), ("out_channels", .integer(outChannels)),
            ("sample_size", .integer(sampleSize)), ("scaling_factor", .number("0.18215")),
            ("up_block_types", .array(channels.map { _ in .string("UpDecoderBlock2D") })),
            ("use_post_quant_conv", .bool(hasPostQuantConv)), ("use_quant_conv", .bool(hasQuantConv)),
        ])
    }
}

extension JSONValue {
    static func integer(_ value: Int) -> JSONValue { .number(String(value)) }

    static func config(_ members: [(String, JSONValue)]) -> JSONValue {
        .object(members.map { JSONMember(key: $0.0, value: $0.1) })
    }

    /// diffusers' "int or one per block": the int when all levels agree.
    static func perLevel(_ values: [Int]) -> JSONValue {
        Set(values).count == 1 ? .integer(values[0]) : .array(values.map(JSONValue.integer))
    }

    /// As json.dumps(indent=2) writes a config, one member per line.
    var configText: String { render(indent: "") + "\n" }

    private func render(indent: String) -> String {
        switch self {
        case .null: return "null"
        case .bool(let flag): return String(flag)
        case .number(let text): return text
        case .string(let text):
            return "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case .array(let elements):
            return "[" + elements.map { $0.render(indent: indent) }.joined(separator: ", ") + "]"
        case .object(let members):
            let inner = indent + "  "
            let lines = members.map { inner + JSONValue.string($0.key).render(indent: inner) + ": " + $0.value.render(indent: inner) }
            return "{\n" + lines.joined(separator: ",\n") + "\n" + indent + "}"
        }
    }
}
