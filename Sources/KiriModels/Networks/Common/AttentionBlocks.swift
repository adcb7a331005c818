import KiriTensor

/// diffusers' Attention as UNet2DModel's attention blocks build it (`_from_deprecated_attn_block=True`,
/// `residual_connection=True`, biased projections, a group norm first), with AttnProcessor2_0's forward:
///   h = group_norm(x) viewed as tokens [B, H·W, C]
///   out = (to_out.0(SDPA(to_q(h), to_k(h), to_v(h))) as [B, C, H, W] + x) / rescale_output_factor
/// Keys `PREFIX.group_norm`, `PREFIX.to_q`, `to_k`, `to_v`, `to_out.0`; checkpoints saved from diffusers' older
/// AttentionBlock (google/ddpm-* among them) name the projections `query`, `key`, `value`, `proj_attn`, which
/// diffusers renames on load (`_convert_deprecated_attention_blocks`) and so does this.
final class SpatialSelfAttention {
    let groupNorm: GroupNorm
    /// to_q, to_k and to_v stacked: one product gives [q | k | v] per token.
    let queryKeyValue: Linear
    let output: Linear
    let heads: Int, headDimension: Int, rescale: Float

    init(_ weights: WeightReader, _ prefix: String, channels: Int, headDimension: Int, groups: Int, eps: Double,
         rescale: Double) throws {
        heads = channels / headDimension
        self.headDimension = headDimension
        let inner = heads * headDimension
        groupNorm = try GroupNorm(weights, "\(prefix).group_norm", groups: groups, channels: channels, eps: eps)
        let legacy = !weights.contains("\(prefix).to_q.weight") && weights.contains("\(prefix).query.weight")
        let names = legacy ? ["query", "key", "value", "proj_attn"] : ["to_q", "to_k", "to_v", "to_out.0"]
        queryKeyValue = try Linear(stacking: names[0..<3].map { try Linear(weights, "\(prefix).\($0)", channels, inner) })
        output = try Linear(weights, "\(prefix).\(names[3])", inner, channels)
        self.rescale = Float(rescale)
    }

    func callAsFunction(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
        let (batch, tokens, inner) = (x.batch, x.spatial, heads * headDimension)
        let normalized = try groupNorm(x, workspace)
        let qkv = try workspace.take([batch, tokens, 3 * inner])
        try queryKeyValue.forward(tokensFrom: normalized.data, into: qkv.data, batch: batch, tokens: tokens, workspace)
        let attended = try workspace.take([batch, tokens, inner])
        try attend(attended.data, query: AttentionOperand(base: qkv.data, stride: 3 * inner),
                   key: AttentionOperand(base: qkv.data + inner, stride: 3 * inner),
                   value: AttentionOperand(base: qkv.data + 2 * inner, stride: 3 * inner),
                   batch: batch, queries: tokens, keys: tokens, heads: heads, headDimension: headDimension, workspace)
        let out = try workspace.take(x.shape)
        out.data.update(from: x.data, count: x.count)
        try output.forward(channelsFrom: attended.data, into: out.data, accumulate: true, batch: batch, tokens: tokens, workspace)
        if rescale != 1 { scale(out, by: 1 / rescale) }
        return out
    }
}

/// out[B, Nq, H·D] = SDPA over strided q, k, v with scale 1/√D.
func attend(_ out: UnsafeMutablePointer<Float>, query: AttentionOperand, key: AttentionOperand, value: AttentionOperand,
            batch: Int, queries: Int, keys: Int, heads: Int, headDimension: Int, _ workspace: Workspace) throws {
    try workspace.backend.attention(into: out, outStride: heads * headDimension, query: query, key: key, value: value, batch: batch,
                                    queries: queries, keys: keys, heads: heads, headDimension: headDimension, causal: false, workspace)
}

/// One attention of a BasicTransformerBlock: diffusers' Attention (models/attention_processor.py) with unbiased
/// to_q, to_k, to_v and a biased to_out.0, run as AttnProcessor2_0 does, adding its output to the tokens in place:
///   h += to_out.0(SDPA(to_q(n), to_k(c), to_v(c)))   c = n (self-attention) or encoder_hidden_states
final class TransformerAttention {
    enum Projections {
        /// to_q, to_k and to_v stacked: one product over the tokens gives [q | k | v].
        case selfAttention(queryKeyValue: Linear)
        /// to_q over the tokens; to_k and to_v stacked over the context.
        case crossAttention(query: Linear, keyValue: Linear)
    }

    let projections: Projections
    let output: Linear
    let heads: Int, headDimension: Int

    /// A nil `contextDimension` makes a self-attention.
    init(_ weights: WeightReader, _ prefix: String, dimension: Int, heads: Int, headDimension: Int, contextDimension: Int?) throws {
        let inner = heads * headDimension
        func projection(_ name: String, _ inFeatures: Int) throws -> Linear {
            try Linear(weights, "\(prefix).\(name)", inFeatures, inner, bias: false)
        }
        if let contextDimension {
            projections = .crossAttention(query: try projection("to_q", dimension),
                                          keyValue: try Linear(stacking: [projection("to_k", contextDimension),
                                                                          projection("to_v", contextDimension)]))
        } else {
            projections = .selfAttention(queryKeyValue: try Linear(stacking: ["to_q", "to_k", "to_v"].map { try projection($0, dimension) }))
        }
        output = try Linear(weights, "\(prefix).to_out.0", inner, dimension)
        (self.heads, self.headDimension) = (heads, headDimension)
    }

    /// h [B, N, dim] += the attention of `normalized` [B, N, dim] to itself or to `context` [B, S, contextDimension].
    func forward(_ h: Buffer, normalized: Buffer, context: UnsafePointer<Float>, contextLength: Int, _ workspace: Workspace) throws {
        let (batch, tokens) = (h.shape[0], h.shape[1])
        let rows = batch * tokens, inner = heads * headDimension
        let attended = try workspace.take([batch, tokens, inner])
        switch projections {
        case .selfAttention(let queryKeyValue):
            let qkv = try workspace.take([batch, tokens, 3 * inner])
            try queryKeyValue.forward(into: qkv.data, normalized.data, rows: rows, workspace)
            try attend(attended.data, query: AttentionOperand(base: qkv.data, stride: 3 * inner),
                       key: AttentionOperand(base: qkv.data + inner, stride: 3 * inner),
                       value: AttentionOperand(base: qkv.data + 2 * inner, stride: 3 * inner),
                       batch: batch, queries: tokens, keys: tokens, heads: heads, headDimension: headDimension, workspace)
        case .crossAttention(let queryProjection, let keyValueProjection):
            let query = try workspace.take([batch, tokens, inner])
            try queryProjection.forward(into: query.data, normalized.data, rows: rows, workspace)
            let keyValue = try workspace.take([batch, contextLength, 2 * inner])
            try keyValueProjection.forward(into: keyValue.data, context, rows: batch * contextLength, workspace)
            try attend(attended.data, query: AttentionOperand(base: query.data, stride: inner),
                       key: AttentionOperand(base: keyValue.data, stride: 2 * inner),
                       value: AttentionOperand(base: keyValue.data + inner, stride: 2 * inner),
                       batch: batch, queries: tokens, keys: contextLength, heads: heads, headDimension: headDimension, workspace)
        }
        try output.forward(into: h.data, attended.data, rows: rows, accumulate: true, workspace)
    }
}

/// diffusers' BasicTransformerBlock (models/attention.py) as SD 1.x and 2.x use it: norm_type "layer_norm", GEGLU
/// feed-forward of inner size 4·dim, on tokens h [B, N, dim] updated in place:
///   h += attn1(norm1(h))                        self-attention; with only_cross_attention, to encoder_hidden_states
///   h += attn2(norm2(h), encoder_hidden_states) cross-attention
///   h += ff(norm3(h))                           ff.net.0 = GEGLU(proj), ff.net.2 = Linear
final class BasicTransformerBlock {
    let norm1: LayerNorm, attention1: TransformerAttention
    let norm2: LayerNorm, attention2: TransformerAttention
    let norm3: LayerNorm, feedForwardIn: Linear, feedForwardOut: Linear
    let dimension: Int, feedForwardDimension: Int

    init(_ weights: WeightReader, _ prefix: String, dimension: Int, heads: Int, headDimension: Int, contextDimension: Int,
         onlyCrossAttention: Bool) throws {
        norm1 = try LayerNorm(weights, "\(prefix).norm1", features: dimension)
        attention1 = try TransformerAttention(weights, "\(prefix).attn1", dimension: dimension, heads: heads, headDimension: headDimension,
                                              contextDimension: onlyCrossAttention ? contextDimension : nil)
        norm2 = try LayerNorm(weights, "\(prefix).norm2", features: dimension)
        attention2 = try TransformerAttention(weights, "\(prefix).attn2", dimension: dimension, heads: heads, headDimension: headDimension,
                                              contextDimension: contextDimension)
        norm3 = try LayerNorm(weights, "\(prefix).norm3", features: dimension)
        feedForwardDimension = 4 * dimension
        feedForwardIn = try Linear(weights, "\(prefix).ff.net.0.proj", dimension, 2 * feedForwardDimension)
        feedForwardOut = try Linear(weights, "\(prefix).ff.net.2", feedForwardDimension, dimension)
        self.dimension = dimension
    }

    /// Rows of the feed-forward computed at once: its [rows, 8·dim] intermediate stays within 16 MiB.
    var feedForwardRows: Int { max(1, (1 << 22) / (2 * feedForwardDimension)) }

    /// `context` is encoder_hidden_states [B, S, contextDimension].
    func forward(_ h: Buffer, context: UnsafePointer<Float>, contextLength: Int, _ workspace: Workspace) throws {
        let rows = h.shape[0] * h.shape[1]
        let normalized = try workspace.take(h.shape)
        norm1.forward(into: normalized.data, h.data, rows: rows, workspace)
        try attention1.forward(h, normalized: normalized, context: context, contextLength: contextLength, workspace)
        norm2.forward(into: normalized.data, h.data, rows: rows, workspace)
        try attention2.forward(h, normalized: normalized, context: context, contextLength: contextLength, workspace)

        norm3.forward(into: normalized.data, h.data, rows: rows, workspace)
        let chunk = min(rows, feedForwardRows)
        let projected = try workspace.scratch(.feedForward, chunk * 2 * feedForwardDimension)
        let gated = try workspace.scratch(.gated, chunk * feedForwardDimension)
        var start = 0
        while start < rows {
            let count = min(chunk, rows - start)
            try feedForwardIn.forward(into: projected, normalized.data + start * dimension, rows: count, workspace)
            workspace.backend.geglu(into: gated, projected, rows: count, features: feedForwardDimension)
            try feedForwardOut.forward(into: h.data + start * dimension, gated, rows: count, accumulate: true, workspace)
            start += count
        }
    }
}

/// diffusers' Transformer2DModel (models/transformers/transformer_2d.py) with continuous input:
///   h = proj_in(GroupNorm(groups, eps=1e-6)(x)) as tokens [B, H·W, inner]
///   h = transformer_blocks(h, encoder_hidden_states)
///   out = proj_out(h) as [B, C, H, W] + x
/// proj_in and proj_out are 1×1 convs ([inner, C, 1, 1]) or, with use_linear_projection, Linear ([inner, C]): the
/// same product either way.
final class Transformer2D {
    let norm: GroupNorm
    let projectionIn: Linear, projectionOut: Linear
    let blocks: [BasicTransformerBlock]
    let contextDimension: Int

    init(_ weights: WeightReader, _ prefix: String, channels: Int, heads: Int, layers: Int, contextDimension: Int, groups: Int,
         linearProjection: Bool, onlyCrossAttention: Bool) throws {
        let headDimension = channels / heads, inner = heads * (channels / heads)
        norm = try GroupNorm(weights, "\(prefix).norm", groups: groups, channels: channels, eps: 1e-6)
        func projection(_ name: String, _ inFeatures: Int, _ outFeatures: Int) throws -> Linear {
            if linearProjection { return try Linear(weights, "\(prefix).\(name)", inFeatures, outFeatures) }
            return Linear(pointwise: try Conv2d(weights, "\(prefix).\(name)", inFeatures, outFeatures, kernel: 1))
        }
        projectionIn = try projection("proj_in", channels, inner)
        projectionOut = try projection("proj_out", inner, channels)
        blocks = try (0..<layers).map {
            try BasicTransformerBlock(weights, "\(prefix).transformer_blocks.\($0)", dimension: inner, heads: heads,
                                      headDimension: headDimension, contextDimension: contextDimension,
                                      onlyCrossAttention: onlyCrossAttention)
        }
        self.contextDimension = contextDimension
    }

    func callAsFunction(_ x: Buffer, context: UnsafePointer<Float>, contextLength: Int, _ workspace: Workspace) throws -> Buffer {
        let (batch, tokens, inner) = (x.batch, x.spatial, projectionIn.outFeatures)
        let normalized = try norm(x, workspace)
        let h = try workspace.take([batch, tokens, inner])
        try projectionIn.forward(tokensFrom: normalized.data, into: h.data, batch: batch, tokens: tokens, workspace)
        for block in blocks {
            try block.forward(h, context: context, contextLength: contextLength, workspace)
        }
        let out = try workspace.take(x.shape)
        out.data.update(from: x.data, count: x.count)
        try projectionOut.forward(channelsFrom: h.data, into: out.data, accumulate: true, batch: batch, tokens: tokens, workspace)
        return out
    }
}
