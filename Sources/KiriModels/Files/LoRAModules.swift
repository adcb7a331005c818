/// The modules of one network a LoRA can patch (every weight of rank 2 or 4), found by each name a LoRA file
/// gives them: the dotted module path of diffusers and PEFT (`down_blocks.0.attentions.0.proj_in`) and kohya's
/// underscore form of it (sd-scripts networks/lora.py: `lora_name = prefix + name.replace(".", "_")`).
/// Underscores are ambiguous in reverse (`to_out_0` is `to_out.0`, `proj_in` is not `proj.in`), so the table goes
/// forward from the network's own keys, as ComfyUI's comfy/lora.py (model_lora_keys_unet, model_lora_keys_clip)
/// builds it, instead of guessing dots back as diffusers' _convert_unet_lora_key does. An underscore form two
/// paths share finds neither.
struct LoRAModules {
    let source: any TensorSource
    private let isTextEncoder: Bool
    /// Module path → its weight's key in `source`. A text encoder's paths start with `text_model.` whether or not its
    /// file has that level (transformers 5 saves without it, kohya's names have it).
    private var weights: [String: String] = [:]
    /// Underscore form → module path.
    private var underscored: [String: String] = [:]
    /// For a UNet: diffusers' key for a key of the original layout (SingleFileKeys.unetKeys).
    private var originalLayout: ((String) -> String?)?

    init(unet source: any TensorSource) { self.init(source, isTextEncoder: false) }

    init(textEncoder source: any TensorSource) { self.init(source, isTextEncoder: true) }

    private init(_ source: any TensorSource, isTextEncoder: Bool) {
        self.source = source
        self.isTextEncoder = isTextEncoder
        var ambiguous: Set<String> = []
        var resnets: [Int: Set<Int>] = [:]
        for name in source.names where name.hasSuffix(".weight") {
            guard let rank = source.shape(name)?.count, rank == 2 || rank == 4 else { continue }
            let module = canonical(String(name.dropLast(".weight".count)))
            weights[module] = name
            let underscore = module.replacingOccurrences(of: ".", with: "_")
            if underscored.updateValue(module, forKey: underscore) != nil { ambiguous.insert(underscore) }
            let parts = module.split(separator: ".")
            if parts.count > 3, parts[0] == "down_blocks", parts[2] == "resnets", let level = Int(parts[1]),
               let layer = Int(parts[3]) {
                resnets[level, default: []].insert(layer)
            }
        }
        for underscore in ambiguous { underscored[underscore] = nil }
        if !isTextEncoder, !resnets.isEmpty, (0..<resnets.count).allSatisfy({ resnets[$0] != nil }) {
            originalLayout = SingleFileKeys.unetKeys(layers: (0..<resnets.count).map { resnets[$0]!.count })
        }
    }

    private func canonical(_ path: String) -> String {
        isTextEncoder && !path.hasPrefix("text_model.") ? "text_model." + path : path
    }

    /// The weight key of module `path`, dotted as diffusers and PEFT write it.
    func weight(dotted path: String) -> String? { weights[canonical(path)] }

    /// The weight key of kohya's module `name` (what follows `lora_unet_` or `lora_te_`).
    func weight(underscored name: String) -> String? {
        if let module = underscored[name] { return weights[module] }
        return originalLayoutWeight(name)
    }

    /// kohya's names for a UNet in the original layout (`input_blocks_1_1_proj_in`, `middle_block_1_...`,
    /// `output_blocks_3_0_in_layers_2`), which trainers that work on the LDM UNet write, as diffusers'
    /// _maybe_map_sgm_blocks_to_diffusers renumbers them: the block part goes through the single-file map and the
    /// rest, still in underscores, is looked up as above.
    private func originalLayoutWeight(_ name: String) -> String? {
        guard let originalLayout else { return nil }
        let tokens = name.split(separator: "_", omittingEmptySubsequences: false).map(String.init)
        guard tokens.count >= 2 else { return nil }
        let (block, indexCount): (String, Int)
        switch (tokens[0], tokens[1]) {
        case ("input", "blocks"), ("output", "blocks"): (block, indexCount) = ("\(tokens[0])_blocks", 2)
        case ("middle", "block"): (block, indexCount) = ("middle_block", 1)
        case ("time", "embed"): (block, indexCount) = ("time_embed", 1)
        case ("out", _): (block, indexCount) = ("out", 1)
        default: return nil
        }
        let nameTokens = block.split(separator: "_").count
        let indices = tokens.dropFirst(nameTokens).prefix(indexCount)
        guard indices.count == indexCount, indices.allSatisfy({ Int($0) != nil }) else { return nil }
        var rest = tokens.dropFirst(nameTokens + indexCount).joined(separator: "_")
        // LDM's ResBlock modules are numbered inside (in_layers.2, out_layers.3, emb_layers.1).
        for layers in ["in_layers_", "out_layers_", "emb_layers_"] where rest.hasPrefix(layers) {
            rest = layers.dropLast() + "." + rest.dropFirst(layers.count)
        }
        let key = ([block] + indices + (rest.isEmpty ? [] : [rest])).joined(separator: ".") + ".weight"
        guard let mapped = originalLayout(key), mapped.hasSuffix(".weight") else { return nil }
        guard let module = underscored[mapped.dropLast(".weight".count).replacingOccurrences(of: ".", with: "_")] else { return nil }
        return weights[module]
    }
}
