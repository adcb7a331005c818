import Foundation
import KiriTensor

/// What `CLIPTextModel.forward` returns.
public struct CLIPTextOutput {
    /// [B, T, hidden_size]: the chosen layer's output after final_layer_norm, the context a UNet attends to.
    public let hiddenStates: Tensor
    /// [B, hidden_size]: the last layer's output after final_layer_norm at each sequence's end token (transformers'
    /// `pooler_output`, which SDXL conditions on); nil unless asked for.
    public let pooled: Tensor?
}

/// transformers' CLIPTextModel (models/clip/modeling_clip.py), the text encoder of Stable Diffusion pipelines, with
/// every module at its checkpoint key:
///   h = embeddings.token_embedding(ids) + embeddings.position_embedding(0..<T)
///   h = encoder.layers(h)            pre-norm layers with causal self-attention
///   out = final_layer_norm(h)
/// Keys are read with or without the `text_model.` prefix: transformers 4 wrote it (so diffusers pipelines'
/// `text_encoder/` folders have it), as does CLIPTextModelWithProjection; transformers 5 writes CLIPTextModel's
/// without. Other tensors in the file (`text_projection.weight`, a float `position_ids`) are ignored. Parameters are
/// float32 in memory; intermediate storage is pooled and reused by the next call. One forward pass runs at a time.
public final class CLIPTextModel {
    public let config: CLIPTextConfig
    /// Elements in the parameters the network uses.
    public let parameterCount: Int

    private let tokenEmbedding: WeightMatrix, positionEmbedding: Tensor
    private let layers: [CLIPEncoderLayer]
    private let finalLayerNorm: LayerNorm
    private let workspace = Workspace()
    private let lock = NSLock()

    /// Reads every tensor the config implies from `weights` with its exact shape (security case 31); a missing or
    /// misshapen tensor is a ModelFileError naming its key. A network too large for the run's memory cap is refused
    /// before anything is converted (security case 36).
    public init(config: CLIPTextConfig, weights file: any TensorSource) throws {
        try reserveLoading(loadingBytes(file), of: "the text encoder", from: file)
        self.config = config
        let weights = WeightReader(file)
        let prefix = weights.contains("text_model.embeddings.token_embedding.weight") ? "text_model." : ""
        let width = config.hiddenSize
        tokenEmbedding = try weights.matrix("\(prefix)embeddings.token_embedding.weight", [config.vocabSize, width])
        positionEmbedding = try weights("\(prefix)embeddings.position_embedding.weight", [config.maxPositionEmbeddings, width])
        layers = try (0..<config.numHiddenLayers).map { try CLIPEncoderLayer(weights, "\(prefix)encoder.layers.\($0)", config) }
        finalLayerNorm = try LayerNorm(weights, "\(prefix)final_layer_norm", features: width, eps: Float(config.layerNormEps))
        parameterCount = weights.parameterCount
    }

    /// The encoder's output for `tokens`: B sequences of ids from a CLIP tokenizer, all of one length T, 1 ≤ T ≤
    /// max_position_embeddings (SD pipelines pad to 77).
    ///
    /// `clipSkip` counts layers from the end as A1111's "Clip skip" setting does: 1 (the default) is the last
    /// layer's output, 2 the penultimate (what SD2 and many SD1 fine-tunes are used with), N the output of layer
    /// num_hidden_layers - N + 1, which is `hidden_states[-N]` of transformers' output_hidden_states. diffusers'
    /// `clip_skip` counts one less (its clip_skip=1 is A1111's 2). final_layer_norm is applied to that output, as
    /// diffusers' encode_prompt and A1111 do. Only the layers up to it run, unless `pooled` is asked for, which
    /// comes from the last layer.
    ///
    /// Errors are TensorErrors counting the tokens as argument 1 and clipSkip as 2. An input whose activations do
    /// not fit in the run's memory cap is refused before any work; a stopped run (`Cancellation.current`) fails
    /// with the cancellation's error between layers.
    public func forward(_ tokens: [[Int]], clipSkip: Int = 1, pooled: Bool = false) throws -> CLIPTextOutput {
        lock.lock()
        defer { lock.unlock() }
        try checkInputs(tokens, clipSkip: clipSkip)
        let (batch, length) = (tokens.count, tokens[0].count)
        let bytes = activationBytes(batch: batch, tokens: length)
        if let left = memoryLeft(ifShortOf: bytes, reusable: workspace.freeBytes) {
            throw TensorError(argument: 1, "\(batch) sequences of \(length) tokens need \(describeBytes(bytes)) for the text encoder's "
                + "activations, but the run has \(left)")
        }
        do {
            // The kernels split their work over the cores themselves (UNet.forward says why).
            return try SingleThreadedBLAS.run { try run(tokens, clipSkip: clipSkip, pooled: pooled) }
        } catch {
            workspace.trim()
            guard error as? TensorError == .outOfMemory else { throw error }
            throw TensorError(argument: 1, "\(batch) sequences of \(length) tokens need more memory for the text encoder's activations "
                + "than the run has: \(memoryLeft(ifShortOf: Int.max) ?? "the system refused it")")
        }
    }

    /// Bytes a forward pass holds at once (Int.max if they overflow): per token the hidden state, its normalised
    /// copy, q, k and v, the attention's output, the MLP's intermediate and the result; and the attention scores.
    func activationBytes(batch: Int, tokens: Int) -> Int {
        let perToken = 7 * config.hiddenSize + config.intermediateSize
        let scores = Parallel.threads * attentionScoreFloats(queries: tokens, keys: tokens)
        guard let count = elementCount([batch, tokens, perToken, MemoryLayout<Float>.stride]) else { return Int.max }
        let (total, overflow) = count.addingReportingOverflow(scores * MemoryLayout<Float>.stride)
        return overflow ? Int.max : total
    }

    private func run(_ tokens: [[Int]], clipSkip: Int, pooled: Bool) throws -> CLIPTextOutput {
        let (batch, length, width) = (tokens.count, tokens[0].count, config.hiddenSize)
        let h = try workspace.take([batch, length, width])
        tokenEmbeddingForward(h.data, tokens, tokenEmbedding, positionEmbedding.data, features: width)
        let cancellation = Cancellation.current
        let chosen = layers.count - clipSkip + 1
        for layer in layers[..<chosen] {
            try cancellation?.check()
            try layer.forward(h, workspace)
        }
        let hiddenStates = try Tensor(shape: [batch, length, width])
        finalLayerNorm.forward(into: hiddenStates.data, h.data, rows: batch * length, workspace)

        var pooledOutput: Tensor?
        if pooled {
            for layer in layers[chosen...] {
                try cancellation?.check()
                try layer.forward(h, workspace)
            }
            let ends = try workspace.take([batch, width])
            for (b, sequence) in tokens.enumerated() {
                (ends.data + b * width).update(from: h.data + (b * length + endPosition(sequence)) * width, count: width)
            }
            let output = try Tensor(shape: [batch, width])
            finalLayerNorm.forward(into: output.data, ends.data, rows: batch, workspace)
            pooledOutput = output
        }
        try cancellation?.check()
        return CLIPTextOutput(hiddenStates: hiddenStates, pooled: pooledOutput)
    }

    /// Where transformers pools: the first largest id under the legacy eos_token_id 2, else the first eos_token_id
    /// (position 0 when there is none, as its argmax over no match gives).
    func endPosition(_ sequence: [Int]) -> Int {
        if config.eosTokenId == 2 { return sequence.firstIndex(of: sequence.max()!)! }
        return sequence.firstIndex(of: config.eosTokenId) ?? 0
    }

    /// Frees the pooled intermediate storage (the next call allocates it again).
    public func releaseBuffers() {
        lock.lock()
        defer { lock.unlock() }
        workspace.trim()
    }

    private func checkInputs(_ tokens: [[Int]], clipSkip: Int) throws {
        guard let length = tokens.first?.count, length > 0 else {
            throw TensorError(argument: 1, "expected at least one sequence of at least one token")
        }
        if let index = tokens.firstIndex(where: { $0.count != length }) {
            throw TensorError(argument: 1, "sequence \(index + 1) has \(tokens[index].count) tokens but sequence 1 has \(length); pad them to one length")
        }
        guard length <= config.maxPositionEmbeddings else {
            throw TensorError(argument: 1, "\(length) tokens are more than the \(config.maxPositionEmbeddings) positions of this text encoder (max_position_embeddings)")
        }
        for (index, sequence) in tokens.enumerated() {
            if let position = sequence.firstIndex(where: { $0 < 0 || $0 >= config.vocabSize }) {
                throw TensorError(argument: 1, "token \(sequence[position]) (sequence \(index + 1), position \(position + 1)) is outside the vocabulary of \(config.vocabSize)")
            }
        }
        guard (1...layers.count).contains(clipSkip) else {
            throw TensorError(argument: 2, "clip skip must be between 1 (the last layer) and \(layers.count), got \(clipSkip)")
        }
    }
}

/// transformers' CLIPEncoderLayer, pre-norm, on h [B, T, D] updated in place:
///   h += self_attn.out_proj(causal attention of q_proj, k_proj, v_proj over layer_norm1(h)), scale head_dim^-0.5
///   h += mlp.fc2(act(mlp.fc1(layer_norm2(h))))
final class CLIPEncoderLayer {
    let layerNorm1: LayerNorm, queryKeyValue: Linear, outputProjection: Linear
    let layerNorm2: LayerNorm, fc1: Linear, fc2: Linear
    let heads: Int, headDimension: Int, activation: Activation

    init(_ weights: WeightReader, _ prefix: String, _ config: CLIPTextConfig) throws {
        let width = config.hiddenSize, eps = Float(config.layerNormEps)
        layerNorm1 = try LayerNorm(weights, "\(prefix).layer_norm1", features: width, eps: eps)
        queryKeyValue = try Linear(stacking: ["q_proj", "k_proj", "v_proj"].map {
            try Linear(weights, "\(prefix).self_attn.\($0)", width, width)
        })
        outputProjection = try Linear(weights, "\(prefix).self_attn.out_proj", width, width)
        layerNorm2 = try LayerNorm(weights, "\(prefix).layer_norm2", features: width, eps: eps)
        fc1 = try Linear(weights, "\(prefix).mlp.fc1", width, config.intermediateSize)
        fc2 = try Linear(weights, "\(prefix).mlp.fc2", config.intermediateSize, width)
        (heads, headDimension, activation) = (config.numAttentionHeads, width / config.numAttentionHeads, config.hiddenAct.kernel)
    }

    func forward(_ h: Buffer, _ workspace: Workspace) throws {
        let (batch, tokens, width) = (h.shape[0], h.shape[1], h.shape[2])
        let rows = batch * tokens
        let normalized = try workspace.take(h.shape)
        layerNorm1.forward(into: normalized.data, h.data, rows: rows, workspace)
        let qkv = try workspace.take([batch, tokens, 3 * width])
        try queryKeyValue.forward(into: qkv.data, normalized.data, rows: rows, workspace)
        let attended = try workspace.take(h.shape)
        try workspace.backend.attention(into: attended.data, outStride: width, query: AttentionOperand(base: qkv.data, stride: 3 * width),
                                        key: AttentionOperand(base: qkv.data + width, stride: 3 * width),
                                        value: AttentionOperand(base: qkv.data + 2 * width, stride: 3 * width), batch: batch,
                                        queries: tokens, keys: tokens, heads: heads, headDimension: headDimension, causal: true,
                                        workspace)
        try outputProjection.forward(into: h.data, attended.data, rows: rows, accumulate: true, workspace)

        layerNorm2.forward(into: normalized.data, h.data, rows: rows, workspace)
        let intermediate = try workspace.take([batch, tokens, fc1.outFeatures])
        try fc1.forward(into: intermediate.data, normalized.data, rows: rows, workspace)
        workspace.backend.activation(activation, into: intermediate.data, intermediate.data, count: intermediate.count)
        try fc2.forward(into: h.data, intermediate.data, rows: rows, accumulate: true, workspace)
    }
}
