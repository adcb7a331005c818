/// The original CompVis / A1111 single-file key layout mapped onto diffusers' and transformers' keys, one component
/// at a time, as diffusers/loaders/single_file_utils.py converts it (convert_ldm_unet_checkpoint,
/// convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint). Keys no rule matches
/// (EMA copies, LatentDiffusion's schedule buffers, `position_ids`) are left out, as diffusers leaves them.
enum SingleFileKeys {
    typealias Entries = [(key: String, entry: TensorMap.Entry)]

    static let unetPrefix = "model.diffusion_model."
    static let vaePrefix = "first_stage_model."
    static let clipPrefix = "cond_stage_model.transformer."
    static let openCLIPPrefix = "cond_stage_model.model."

    // MARK: UNet

    /// ResnetBlock2D's modules in LDM's ResBlock (openaimodel.py) and in diffusers.
    static let resnetNames = [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("out_layers.0.", "norm2."),
                              ("out_layers.3.", "conv2."), ("emb_layers.1.", "time_emb_proj."),
                              ("skip_connection.", "conv_shortcut.")]

    /// The file's UNet tensors under diffusers' keys (unetKeys).
    static func unet(_ file: SafetensorsFile, layers: [Int]) -> Entries {
        let diffusersKey = unetKeys(layers: layers)
        var entries: Entries = []
        for name in file.names where name.hasPrefix(unetPrefix) {
            guard let mapped = diffusersKey(String(name.dropFirst(unetPrefix.count))) else { continue }
            entries.append((mapped, .whole(name, file.info(name)!.shape)))
        }
        return entries
    }

    /// diffusers' key for a UNet key of this layout without its `model.diffusion_model.` prefix, for `layers[level]`
    /// resnets per down level; nil when no rule matches. LDM numbers the input blocks through the levels: conv_in,
    /// then each level's layers (resnet `.0`, attention `.1`) and, but for the last level, its downsampler (`.0.op`);
    /// output blocks go back up with one layer more per level, the upsampler inside the last (`.1.conv`, or `.2.conv`
    /// after an attention).
    static func unetKeys(layers: [Int]) -> (String) -> String? {
        let levels = layers.count
        var inputs: [Int: (level: Int, layer: Int?)] = [:], outputs: [Int: (block: Int, layer: Int)] = [:]
        var index = 1
        for level in 0..<levels {
            for layer in 0..<layers[level] { inputs[index + layer] = (level, layer) }
            index += layers[level]
            if level < levels - 1 { inputs[index] = (level, nil); index += 1 }
        }
        index = 0
        for block in 0..<levels {
            for layer in 0...layers[levels - 1 - block] { outputs[index + layer] = (block, layer) }
            index += layers[levels - 1 - block] + 1
        }
        return { [inputs, outputs] key in unetKey(key, inputs: inputs, outputs: outputs) }
    }

    private static func unetKey(_ key: String, inputs: [Int: (level: Int, layer: Int?)],
                                outputs: [Int: (block: Int, layer: Int)]) -> String? {
        for (original, diffusers) in [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
                                      ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out.")]
        where key.hasPrefix(original) {
            return diffusers + key.dropFirst(original.count)
        }
        let parts = key.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, let block = Int(parts[1]) else { return nil }
        if parts[0] == "middle_block" {
            switch block {
            case 0: return "mid_block.resnets.0.\(resnetKey(parts[2]))"
            case 1: return "mid_block.attentions.0.\(parts[2])"
            case 2: return "mid_block.resnets.1.\(resnetKey(parts[2]))"
            default: return nil
            }
        }
        let inner = parts[2].split(separator: ".", maxSplits: 1).map(String.init)
        guard inner.count == 2, let module = Int(inner[0]) else { return nil }
        let rest = inner[1]
        switch parts[0] {
        case "input_blocks":
            guard let (level, layer) = inputs[block] else { return nil }
            guard let layer else {
                return module == 0 && rest.hasPrefix("op.") ? "down_blocks.\(level).downsamplers.0.conv.\(rest.dropFirst(3))" : nil
            }
            switch module {
            case 0: return "down_blocks.\(level).resnets.\(layer).\(resnetKey(rest))"
            case 1: return "down_blocks.\(level).attentions.\(layer).\(rest)"
            default: return nil
            }
        case "output_blocks":
            guard let (upBlock, layer) = outputs[block] else { return nil }
            if module > 0, rest.hasPrefix("conv.") { return "up_blocks.\(upBlock).upsamplers.0.\(rest)" }
            switch module {
            case 0: return "up_blocks.\(upBlock).resnets.\(layer).\(resnetKey(rest))"
            case 1: return "up_blocks.\(upBlock).attentions.\(layer).\(rest)"
            default: return nil
            }
        default:
            return nil
        }
    }

    private static func resnetKey(_ rest: String) -> String {
        for (original, diffusers) in resnetNames where rest.hasPrefix(original) {
            return diffusers + rest.dropFirst(original.count)
        }
        return rest
    }

    // MARK: VAE

    /// LDM's Encoder/Decoder (ldm/modules/diffusionmodules/model.py) against diffusers' AutoencoderKL: the decoder's
    /// `up.{i}` counts from the bottom where diffusers' `up_blocks` count from the top; the mid attention's q, k,
    /// v and proj_out are 1×1 convs [C, C, 1, 1] there and linear layers [C, C] here.
    static func vae(_ file: SafetensorsFile, levels: Int, prefix: String = vaePrefix) -> Entries {
        var entries: Entries = []
        for name in file.names where name.hasPrefix(prefix) {
            let key = String(name.dropFirst(prefix.count))
            guard let (mapped, isAttention) = vaeKey(key, levels: levels) else { continue }
            var shape = file.info(name)!.shape
            if isAttention, shape.count > 2, shape.dropFirst(2).allSatisfy({ $0 == 1 }) { shape = Array(shape.prefix(2)) }
            entries.append((mapped, .whole(name, shape)))
        }
        return entries
    }

    private static func vaeKey(_ key: String, levels: Int) -> (String, isAttention: Bool)? {
        if key.hasPrefix("quant_conv.") || key.hasPrefix("post_quant_conv.") { return (key, false) }
        let parts = key.split(separator: ".").map(String.init)
        guard parts.count >= 3, parts[0] == "encoder" || parts[0] == "decoder" else { return nil }
        let side = parts[0]
        func joined(_ from: Int) -> String { parts[from...].joined(separator: ".") }
        func resnet(_ from: Int) -> String { joined(from).replacingOccurrences(of: "nin_shortcut.", with: "conv_shortcut.") }
        switch parts[1] {
        case "conv_in", "conv_out": return ("\(side).\(joined(1))", false)
        case "norm_out": return ("\(side).conv_norm_out.\(joined(2))", false)
        case "mid":
            switch parts[2] {
            case "block_1": return ("\(side).mid_block.resnets.0.\(resnet(3))", false)
            case "block_2": return ("\(side).mid_block.resnets.1.\(resnet(3))", false)
            case "attn_1":
                let names = ["norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"]
                guard parts.count == 5, let module = names[parts[3]] else { return nil }
                return ("\(side).mid_block.attentions.0.\(module).\(parts[4])", true)
            default: return nil
            }
        case "down" where side == "encoder", "up" where side == "decoder":
            guard parts.count >= 5, let level = Int(parts[2]), level < levels else { return nil }
            let (blocks, block) = side == "encoder" ? ("down_blocks", level) : ("up_blocks", levels - 1 - level)
            switch parts[3] {
            case "block": return ("\(side).\(blocks).\(block).resnets.\(resnet(4))", false)
            case "downsample": return ("\(side).\(blocks).\(block).downsamplers.0.\(joined(4))", false)
            case "upsample": return ("\(side).\(blocks).\(block).upsamplers.0.\(joined(4))", false)
            default: return nil
            }
        default:
            return nil
        }
    }

    // MARK: Text encoders

    /// SD 1.x's CLIP ViT-L is a transformers CLIPTextModel already; older files lack the `text_model.` level.
    static func clip(_ file: SafetensorsFile) -> Entries {
        file.names.compactMap { name in
            guard name.hasPrefix(clipPrefix), !name.hasSuffix("position_ids") else { return nil }
            let key = String(name.dropFirst(clipPrefix.count))
            return (key.hasPrefix("text_model.") ? key : "text_model." + key, .whole(name, file.info(name)!.shape))
        }
    }

    /// SD 2.x's OpenCLIP ViT-H as a transformers CLIPTextModel of `layers` layers: SD 2 conditions on the
    /// penultimate layer, so the last resblock is left out (diffusers' SD2 text encoder has 23 of the 24), and so
    /// is `text_projection`, which CLIPTextModel does not have. `in_proj` [3W, W] holds q, k and v by rows.
    static func openCLIP(_ file: SafetensorsFile, layers: Int) -> Entries {
        let renames = [("token_embedding.weight", "embeddings.token_embedding.weight"),
                       ("positional_embedding", "embeddings.position_embedding.weight"),
                       ("ln_final.", "final_layer_norm.")]
        let layerRenames = [("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."),
                            ("mlp.c_proj.", "mlp.fc2."), ("attn.out_proj.", "self_attn.out_proj.")]
        var entries: Entries = []
        for name in file.names where name.hasPrefix(openCLIPPrefix) {
            let key = String(name.dropFirst(openCLIPPrefix.count)), shape = file.info(name)!.shape
            if let (original, mapped) = renames.first(where: { key.hasPrefix($0.0) }) {
                entries.append(("text_model." + mapped + key.dropFirst(original.count), .whole(name, shape)))
                continue
            }
            let parts = key.split(separator: ".", maxSplits: 3).map(String.init)
            guard parts.count == 4, parts[0] == "transformer", parts[1] == "resblocks", let layer = Int(parts[2]),
                  layer < layers else { continue }
            let prefix = "text_model.encoder.layers.\(layer).", rest = parts[3]
            if let (original, mapped) = layerRenames.first(where: { rest.hasPrefix($0.0) }) {
                entries.append((prefix + mapped + rest.dropFirst(original.count), .whole(name, shape)))
            } else if rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias" {
                let kind = rest == "attn.in_proj_weight" ? "weight" : "bias"
                for (part, projection) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                    entries.append(("\(prefix)self_attn.\(projection).\(kind)", .rows(name, shape, part: part, of: 3)))
                }
            }
        }
        return entries
    }
}
