/// A transformers `config.json` for `CLIPTextModel` or `CLIPTextModelWithProjection` (a pipeline's
/// `text_encoder/`), with transformers' field names in camel case. The fields that fix the network's shape are
/// required, as every save writes them; the rest take `CLIPTextConfig.__init__`'s defaults
/// (transformers/models/clip/configuration_clip.py). `projection_dim` and the dropouts do not change the text
/// model's output and are not read.
public struct CLIPTextConfig: Sendable, Equatable {
    public enum Architecture: String, Sendable, CaseIterable {
        case textModel = "CLIPTextModel"
        /// SDXL's second text encoder: the same text model under `text_model.`, plus a `text_projection` Kiri
        /// does not use.
        case textModelWithProjection = "CLIPTextModelWithProjection"
    }

    /// transformers' ACT2FN names for the MLP's activation.
    public enum Activation: String, Sendable, CaseIterable {
        /// x · sigmoid(1.702 x), which OpenAI's CLIP (SD1.x) was trained with.
        case quickGelu = "quick_gelu"
        /// The exact GELU of OpenCLIP's models (SD2.x, SDXL's second encoder).
        case gelu

        /// The kernel computing it (the same names).
        var kernel: KiriModels.Activation { KiriModels.Activation(rawValue: rawValue)! }
    }

    /// Nil when the config names none (a config written by `CLIPTextConfig` itself rather than by a model).
    public var architecture: Architecture?
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    /// The longest input: 77 tokens in every Stable Diffusion encoder.
    public var maxPositionEmbeddings: Int
    public var hiddenAct: Activation
    public var layerNormEps: Double
    /// Where the pooled output is taken: 2, the value configs saved before transformers PR #24773 carry, means at
    /// the largest id (the end token is the last in CLIP's vocabulary); any other value, at its first occurrence.
    public var eosTokenId: Int

    // Bounds on every size (security case 36), far above published encoders (OpenCLIP bigG: width 1280, MLP 5120,
    // 32 layers, 20 heads; vocabulary 49408; 77 positions) and low enough that no product of two overflows.

    public static let maximumWidth = 1 << 16
    public static let maximumLayers = 256
    public static let maximumVocabulary = 1 << 22
    public static let maximumPositions = 1 << 16

    /// Reads and checks `path` (a `config.json`).
    public init(path: String) throws(ModelFileError) {
        try self.init(ConfigFields(path: path))
    }

    /// Checks a config already parsed; `path` names it in errors.
    public init(json: JSONValue, path: String) throws(ModelFileError) {
        try self.init(ConfigFields(path: path, json: json))
    }

    init(_ fields: ConfigFields) throws(ModelFileError) {
        if let value = fields.value("architectures") {
            let names = try fields.array(value, "architectures")
            guard names.count == 1 else { throw fields.failure("architectures", "must name one model class, got \(names.count)") }
            architecture = try fields.choice(names[0], "architectures[0]", "model class")
        }
        if let modelType = try fields.optionalString("model_type"), modelType != "clip_text_model" {
            throw fields.failure("model_type", "is '\(modelType)', not 'clip_text_model'")
        }
        let width = 1...Self.maximumWidth
        vocabSize = try fields.requiredInteger("vocab_size", 1...Self.maximumVocabulary)
        hiddenSize = try fields.requiredInteger("hidden_size", width)
        intermediateSize = try fields.requiredInteger("intermediate_size", width)
        numHiddenLayers = try fields.requiredInteger("num_hidden_layers", 1...Self.maximumLayers)
        numAttentionHeads = try fields.requiredInteger("num_attention_heads", width)
        guard hiddenSize % numAttentionHeads == 0 else {
            throw fields.failure("num_attention_heads", "(\(numAttentionHeads)) does not divide hidden_size (\(hiddenSize))")
        }
        maxPositionEmbeddings = try fields.integer("max_position_embeddings", default: 77, 1...Self.maximumPositions)
        hiddenAct = try fields.choice("hidden_act", default: .quickGelu)
        layerNormEps = try fields.double("layer_norm_eps", default: 1e-5)
        guard layerNormEps > 0 else { throw fields.failure("layer_norm_eps", "must be positive, got \(layerNormEps)") }
        eosTokenId = try fields.integer("eos_token_id", default: 49407, 0...Self.maximumVocabulary)
    }
}
