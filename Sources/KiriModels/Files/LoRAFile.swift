import Foundation
import KiriTensor

/// A LoRA file (low-rank adaptation, Hu et al. 2021) for a Stable Diffusion UNet and text encoder: per module a
/// down [r, in(, k, k)] and an up [out, r(, 1, 1)] whose product, times scale · alpha / r, is added to the module's
/// weight, as kohya-ss sd-scripts networks/lora.py (LoRAModule.merge_to), A1111's extensions-builtin/Lora
/// (network_lora.py calc_updown) and PEFT's fuse (peft/tuners/lora/layer.py get_delta_weight) compute it. alpha is
/// r when the file gives none. Names it reads:
/// - kohya-ss / A1111: `lora_unet_<module>` and `lora_te_<module>`, the module path with `_` for `.` (diffusers'
///   UNet, or the original layout's `input_blocks_1_1_proj_in`), with `.lora_down.weight`, `.lora_up.weight` and
///   `.alpha`;
/// - PEFT as diffusers saves it: `unet.<module>.lora_A.weight` and `.lora_B.weight`, `text_encoder.<module>...`,
///   alphas in the header's `lora_adapter_metadata` (PEFTAdapterConfig) or in `<module>.alpha` tensors;
/// - diffusers' older ones: `attn1.processor.to_q_lora.down.weight`, `<module>.lora.down.weight`,
///   `<module>.lora_linear_layer.down.weight`, and files of UNet keys without `unet.`.
///
/// Stricter than A1111, which warns and skips: every module of the file must be one of this model's, with its
/// shape, or nothing is applied. A LoRA for another model or with a part this model lacks is an error naming the
/// modules, never a partial merge that only looks wrong in the pictures.
public final class LoRAFile {
    public let file: SafetensorsFile
    public var path: String { file.path }

    /// Safetensors only: a pickle is refused with the conversion hint (PickleCheckpoint), and the file is
    /// validated as every safetensors file is.
    public convenience init(path: String) throws(ModelFileError) {
        self.init(try SafetensorsFile(path: path))
    }

    public init(_ file: SafetensorsFile) { self.file = file }

    /// The file's updates for a model with these networks (`textEncoder` nil for a model without one), each scaled
    /// by `scale` (A1111's LoRA weight, diffusers' lora_scale; negative subtracts the update), by the keys of the
    /// sources given. Every module is checked before any is returned; at scale 0 nothing is returned, so the
    /// weights stay bit for bit the base's. The down and up tensors are converted to float32 here, against the
    /// run's memory cap.
    public func patches(unet: any TensorSource, textEncoder: (any TensorSource)?,
                        scale: Float) throws(ModelFileError) -> LoRAPatches {
        guard scale.isFinite else { throw ModelFileError(path, "LoRA scale \(scale) is not finite") }
        let modules = try LoRAKeys.modules(file)
        let unetModules = LoRAModules(unet: unet), textModules = textEncoder.map(LoRAModules.init(textEncoder:))
        let withoutPrefix = !modules.contains { $0.component != nil }

        var matched: [(module: LoRAKeys.Module, component: LoRAKeys.Component, key: String)] = []
        var unmatched: [LoRAKeys.Module] = []
        for module in modules {
            // Files of UNet keys alone (diffusers' save_attn_procs) name no component.
            let component = module.component ?? (withoutPrefix ? .unet : nil)
            let target = component == .textEncoder ? textModules : component == .unet ? unetModules : nil
            let key = module.isKohya ? target?.weight(underscored: module.path) : target?.weight(dotted: module.path)
            if let component, let key { matched.append((module, component, key)) } else { unmatched.append(module) }
        }
        guard !matched.isEmpty else {
            throw ModelFileError(path, "LoRA for another architecture? none of its \(modules.count) modules match this model's UNet or text encoder, e.g. '\(modules[0].name)'")
        }
        guard unmatched.isEmpty else {
            let names = unmatched.prefix(3).map { "'\($0.name)'" }.joined(separator: ", ")
            let more = unmatched.count > 3 ? " and \(unmatched.count - 3) more" : ""
            let missing = textEncoder == nil && unmatched.contains { $0.component == .textEncoder } ? " (this model has no text encoder)" : ""
            throw ModelFileError(path, "\(unmatched.count) of the LoRA's \(modules.count) modules match no module of this model\(missing): \(names)\(more)")
        }

        // One weight named twice (diffusers' and the original layout's names side by side) would be updated twice.
        var seen: [String: String] = [:]
        for (module, component, key) in matched {
            if let other = seen.updateValue(module.name, forKey: "\(component) \(key)") {
                throw ModelFileError(path, "LoRA modules '\(other)' and '\(module.name)' both update '\(key)'")
            }
        }

        let configs = try PEFTAdapterConfig.read(file)
        var patches = LoRAPatches()
        for (module, component, key) in matched {
            let network = component == .unet ? (unet, "UNet") : (textEncoder!, "text encoder")
            let config = module.isKohya ? nil : configs[component]
            let patch = try self.patch(module, weight: key, of: network, config: config, scale: scale)
            guard patch.factor != 0 else { continue }
            switch component {
            case .unet: patches.unet[key, default: []].append(patch)
            case .textEncoder: patches.textEncoder[key, default: []].append(patch)
            }
        }
        return patches
    }

    /// The module's tensors, checked against the weight `key` of `network` [out, in(, k, k)]: down [r, in(, k, k)]
    /// and up [out, r], where trailing 1×1 dimensions may come or go (a 1×1 conv's LoRA on a linear layer, as SD 1's
    /// conv proj_in against SD 2's linear one).
    private func patch(_ module: LoRAKeys.Module, weight key: String, of network: (source: any TensorSource, name: String),
                       config: PEFTAdapterConfig?, scale: Float) throws(ModelFileError) -> LoRAPatch {
        let down = try finiteTensor(module.down), up = try finiteTensor(module.up)
        let weight = network.source.shape(key)!
        guard down.rank >= 2, down.shape[0] > 0 else {
            throw ModelFileError(path, "LoRA tensor '\(module.down)' has shape \(shapeString(down.shape)): a down needs rank r ≥ 1 rows")
        }
        let rank = down.shape[0]
        guard up.rank >= 2, up.shape[1] == rank, trimmed(up.shape.dropFirst(2)).isEmpty else {
            throw ModelFileError(path, "LoRA tensor '\(module.up)' has shape \(shapeString(up.shape)) but its down '\(module.down)' \(shapeString(down.shape)) needs an up of [out, \(rank)]")
        }
        guard up.shape[0] == weight[0], trimmed(down.shape.dropFirst()) == trimmed(weight.dropFirst()) else {
            throw ModelFileError(path, "LoRA module '\(module.name)' (up \(shapeString(up.shape)), down \(shapeString(down.shape))) does not fit '\(key)' \(shapeString(weight)) of this model's \(network.name)")
        }

        let alpha: Float, alphaSource: String
        if let alphaKey = module.alpha {
            let tensor = try file.tensor(alphaKey)
            guard tensor.count == 1 else {
                throw ModelFileError(path, "LoRA tensor '\(alphaKey)' has shape \(shapeString(tensor.shape)); an alpha is one number")
            }
            (alpha, alphaSource) = (tensor.data[0], "tensor '\(alphaKey)'")
        } else if let config, let configured = config.alpha(module: module.path) {
            (alpha, alphaSource) = (Float(configured.value), "\(PEFTAdapterConfig.metadataKey) field '\(configured.field)'")
        } else {
            (alpha, alphaSource) = (Float(rank), "")
        }
        guard alpha.isFinite, alpha > 0 else {
            throw ModelFileError(path, "LoRA \(alphaSource) is \(alpha); an alpha must be positive and finite")
        }
        // rsLoRA (Kalajdzievski 2023) scales by alpha / √r, as PEFT's LoraLayer.update_layer with use_rslora.
        let denominator = config?.rankStabilized == true ? Float(rank).squareRoot() : Float(rank)
        return LoRAPatch(up: up, down: down, factor: scale * alpha / denominator)
    }

    private func finiteTensor(_ key: String) throws(ModelFileError) -> Tensor {
        let tensor = try file.tensor(key)
        guard UnsafeBufferPointer(start: tensor.data, count: tensor.count).allSatisfy(\.isFinite) else {
            throw ModelFileError(path, "LoRA tensor '\(key)' holds a value that is not finite")
        }
        return tensor
    }

    private func trimmed(_ dimensions: ArraySlice<Int>) -> ArraySlice<Int> {
        var dimensions = dimensions
        while dimensions.last == 1 { dimensions.removeLast() }
        return dimensions
    }
}

/// A LoRA file's keys grouped into modules.
enum LoRAKeys {
    enum Component { case unet, textEncoder }

    struct Module {
        /// The module as the file names it: the key without its role suffix (`lora_unet_down_blocks_0_..._to_q`,
        /// `unet.down_blocks.0.....to_q`).
        var name: String
        var component: Component?
        /// kohya's underscore path, or a dotted module path.
        var path: String
        var isKohya: Bool
        var down = "", up = "", alpha: String?
    }

    enum Role { case down, up, alpha }

    /// The suffixes of a module's tensors, longest first so that `.lora.down.weight` is not read as `.down.weight`.
    static let suffixes: [(suffix: String, role: Role)] = [
        (".lora_linear_layer.down.weight", .down), (".lora_linear_layer.up.weight", .up),
        (".lora_down.weight", .down), (".lora_up.weight", .up), (".lora.down.weight", .down), (".lora.up.weight", .up),
        (".lora_A.weight", .down), (".lora_B.weight", .up), (".down.weight", .down), (".up.weight", .up),
        (".alpha", .alpha),
    ]

    /// diffusers' attention-processor names for the projections they patch (diffusers/utils/state_dict_utils.py
    /// UNET_TO_DIFFUSERS, DIFFUSERS_OLD_TO_PEFT), by network.
    static let processorProjections = [
        "to_q_lora": ("to_q", "q_proj"), "to_k_lora": ("to_k", "k_proj"), "to_v_lora": ("to_v", "v_proj"),
        "to_out_lora": ("to_out.0", "out_proj"),
    ]

    /// Every module of `file` with its down and up, in the file's order; a key of another kind, or a module with
    /// only part of its tensors, is an error naming the key.
    static func modules(_ file: SafetensorsFile) throws(ModelFileError) -> [Module] {
        var modules: [Module] = [], index: [String: Int] = [:]
        // Integer tensors are no part of a LoRA: their keys are checked too, so that one is an error, not ignored.
        for key in file.names + file.unreadTensors.keys.sorted() {
            guard let (suffix, role) = suffixes.first(where: { key.hasSuffix($0.suffix) }),
                  !(suffix == ".down.weight" || suffix == ".up.weight") || key.dropLast(suffix.count).hasSuffix("_lora") else {
                throw ModelFileError(file.path, "key '\(key)' has an unknown suffix: Kiri reads LoRA modules' .lora_down.weight, .lora_up.weight and .alpha (kohya) or .lora_A.weight and .lora_B.weight (PEFT); LyCORIS's LoHa, LoKr and DoRA are not supported")
            }
            let name = String(key.dropLast(suffix.count))
            let position = index[name] ?? modules.count
            if position == modules.count {
                index[name] = position
                modules.append(module(name))
            }
            switch role {
            case .down: modules[position].down = key
            case .up: modules[position].up = key
            case .alpha: modules[position].alpha = key
            }
        }
        guard !modules.isEmpty else { throw ModelFileError(file.path, "the LoRA file holds no tensors") }
        for module in modules where module.down.isEmpty || module.up.isEmpty {
            let present = [module.down, module.up, module.alpha ?? ""].filter { !$0.isEmpty }.map { "'\($0)'" }
            throw ModelFileError(file.path, "LoRA module '\(module.name)' has \(present.joined(separator: " and ")) but no \(module.down.isEmpty ? "down" : "up") tensor")
        }
        return modules
    }

    /// The component and path a module name gives.
    static func module(_ name: String) -> Module {
        for (prefix, component) in [("lora_unet_", Component.unet), ("lora_te_", .textEncoder)] where name.hasPrefix(prefix) {
            return Module(name: name, component: component, path: String(name.dropFirst(prefix.count)), isKohya: true)
        }
        for (prefix, component) in [("unet.", Component.unet), ("text_encoder.", .textEncoder)] where name.hasPrefix(prefix) {
            return Module(name: name, component: component, path: modulePath(String(name.dropFirst(prefix.count)), component),
                          isKohya: false)
        }
        return Module(name: name, component: nil, path: modulePath(name, .unet), isKohya: name.hasPrefix("lora_"))
    }

    /// `attn1.processor.to_q_lora` is `attn1.to_q` (`self_attn.to_q_lora` is `self_attn.q_proj`); other paths are
    /// module paths already.
    static func modulePath(_ path: String, _ component: Component) -> String {
        let parts = path.split(separator: ".").map(String.init)
        guard let last = parts.last, let projections = processorProjections[last] else { return path }
        var parent = parts.dropLast()
        if parent.last == "processor" { parent.removeLast() }
        return (parent + [component == .unet ? projections.0 : projections.1]).joined(separator: ".")
    }
}

/// The LoRA config PEFT keeps beside an adapter, which diffusers writes into the header's `lora_adapter_metadata`
/// as JSON with one set of fields per network, `unet.lora_alpha`, `unet.alpha_pattern`, `text_encoder.r`, ...
/// (diffusers/loaders/lora_base.py _save_lora_weights, peft's LoraConfig). Only what the merge needs is read.
struct PEFTAdapterConfig {
    static let metadataKey = "lora_adapter_metadata"

    let prefix: String
    let alpha: Double?
    let alphaPattern: [(key: String, alpha: Double)]
    let rankStabilized: Bool

    /// Each network's config, when the header has one.
    static func read(_ file: SafetensorsFile) throws(ModelFileError) -> [LoRAKeys.Component: PEFTAdapterConfig] {
        guard let text = file.metadata[metadataKey] else { return [:] }
        func failure(_ message: String) -> ModelFileError { ModelFileError(file.path, "__metadata__ '\(metadataKey)': \(message)") }
        let json: JSONValue
        do {
            json = try StrictJSONParser.parse(Array(text.utf8))
        } catch {
            throw failure("not valid JSON: \(error.message)")
        }
        guard case .object = json else { throw failure("is \(json.kindName), not an object") }
        var configs: [LoRAKeys.Component: PEFTAdapterConfig] = [:]
        for (prefix, component) in [("unet.", LoRAKeys.Component.unet), ("text_encoder.", .textEncoder)] {
            func number(_ field: String, _ value: JSONValue?) throws(ModelFileError) -> Double? {
                guard let value, value != .null else { return nil }
                guard let number = value.double else { throw failure("'\(field)' is \(value.kindName), not a finite number") }
                return number
            }
            func flag(_ field: String) throws(ModelFileError) -> Bool {
                guard let value = json[prefix + field], value != .null else { return false }
                guard case .bool(let flag) = value else { throw failure("'\(prefix + field)' is \(value.kindName), not a boolean") }
                return flag
            }
            guard json[prefix + "lora_alpha"] != nil || json[prefix + "alpha_pattern"] != nil else { continue }
            if try flag("use_dora") {
                throw failure("'\(prefix)use_dora' is true: DoRA adapters are not supported")
            }
            var pattern: [(String, Double)] = []
            if let value = json[prefix + "alpha_pattern"], value != .null {
                guard case .object(let members) = value else { throw failure("'\(prefix)alpha_pattern' is \(value.kindName), not an object") }
                for member in members {
                    let field = "\(prefix)alpha_pattern.\(member.key)"
                    guard let alpha = try number(field, member.value) else { throw failure("'\(field)' is null, not a number") }
                    pattern.append((member.key, alpha))
                }
            }
            configs[component] = PEFTAdapterConfig(prefix: prefix, alpha: try number(prefix + "lora_alpha", json[prefix + "lora_alpha"]),
                                                   alphaPattern: pattern, rankStabilized: try flag("use_rslora"))
        }
        return configs
    }

    /// The alpha of module `path`, with the field it comes from: the longest alpha_pattern key that is the path or
    /// ends it after a dot (PEFT matches `(.*\.)?key$`, peft/tuners/tuners_utils.py get_pattern_key; keys are taken
    /// literally, not as regular expressions), else lora_alpha.
    func alpha(module path: String) -> (value: Double, field: String)? {
        let matching = alphaPattern.filter { path == $0.key || path.hasSuffix("." + $0.key) }
        if let best = matching.max(by: { $0.key.count < $1.key.count }) {
            return (best.alpha, "\(prefix)alpha_pattern.\(best.key)")
        }
        return alpha.map { ($0, prefix + "lora_alpha") }
    }
}
