import KiriTensor

// The blocks of ResnetBlock2D.swift and AttentionBlocks.swift for training: the same maths and checkpoint keys,
// built from the primitive layers of Training/Layers.swift, each keeping what its backward needs.

/// x / factor into a new buffer (or x itself when the factor is 1): a block's output_scale_factor or
/// rescale_output_factor, applied to a gradient without changing the caller's.
private func divided(_ x: Buffer, by factor: Float, _ workspace: Workspace) throws -> Buffer {
    guard factor != 1 else { return x }
    let out = try workspace.take(x.shape)
    for i in 0..<x.count { out.data[i] = x.data[i] / factor }
    return out
}

/// diffusers' ResnetBlock2D (models/resnet.py), as ResnetBlock2D in ResnetBlock2D.swift computes it.
final class TrainableResnetBlock2D {
    let norm1: TrainableGroupNorm, conv1: TrainableConv2d, timeProjection: TrainableLinear
    let norm2: TrainableGroupNorm, conv2: TrainableConv2d, shortcut: TrainableConv2d?
    let resampling: ResnetBlock2D.Resampling
    let outputScaleFactor: Float
    private var inputShape: [Int] = []

    init(_ parameters: ParameterBuilder, _ layout: UNetModules.Resnet, timeChannels: Int, groups: Int, eps: Double,
         activation: Activation) throws {
        let (prefix, inChannels, outChannels) = (layout.prefix, layout.inChannels, layout.outChannels)
        norm1 = try TrainableGroupNorm(parameters, "\(prefix).norm1", groups: groups, channels: inChannels, eps: eps, activation: activation)
        conv1 = try TrainableConv2d(parameters, "\(prefix).conv1", inChannels, outChannels, kernel: 3, padding: 1)
        timeProjection = try TrainableLinear(parameters, "\(prefix).time_emb_proj", timeChannels, outChannels)
        norm2 = try TrainableGroupNorm(parameters, "\(prefix).norm2", groups: groups, channels: outChannels, eps: eps, activation: activation)
        conv2 = try TrainableConv2d(parameters, "\(prefix).conv2", outChannels, outChannels, kernel: 3, padding: 1)
        shortcut = inChannels == outChannels ? nil
            : try TrainableConv2d(parameters, "\(prefix).conv_shortcut", inChannels, outChannels, kernel: 1)
        resampling = layout.resampling
        outputScaleFactor = Float(layout.outputScaleFactor)
    }

    private func resample(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
        switch resampling {
        case .none: return x
        case .up: return try upsampleNearest(x, height: 2 * x.height, width: 2 * x.width, workspace)
        case .down: return try averagePool(x, workspace)
        }
    }

    /// The gradient of `resample` at an input of `inputShape`.
    private func resampleBackward(_ gradient: Buffer, _ workspace: Workspace) throws -> Buffer {
        guard resampling != .none else { return gradient }
        let shape = [inputShape[0], gradient.channels, inputShape[2], inputShape[3]]
        let out = try workspace.take(shape)
        let planes = shape[0] * shape[1]
        if resampling == .up {
            upsampleNearestBackward(out.data, dOut: gradient.data, planes: planes, height: shape[2], width: shape[3],
                                    outHeight: gradient.height, outWidth: gradient.width)
        } else {
            averagePoolBackward(out.data, dOut: gradient.data, planes: planes, height: shape[2], width: shape[3])
        }
        return out
    }

    /// `time` is act(temb) [B, T].
    func forward(_ x: Buffer, time: Buffer, _ workspace: Workspace) throws -> Buffer {
        inputShape = x.shape
        let projected = try timeProjection.forward(time, workspace)
        let h = try conv1.forward(try resample(try norm1.forward(x, workspace), workspace), extraBias: projected.data, workspace)
        let out = try conv2.forward(try norm2.forward(h, workspace), workspace)
        let input = try resample(x, workspace)
        accumulate(out, try shortcut?.forward(input, workspace) ?? input)
        if outputScaleFactor != 1 { scale(out, by: 1 / outputScaleFactor) }
        return out
    }

    /// The input's gradient; the time embedding's is added to `dTime`.
    func backward(_ dOut: Buffer, dTime: Buffer, _ workspace: Workspace) throws -> Buffer {
        let gradient = try divided(dOut, by: outputScaleFactor, workspace)
        let dH = try norm2.backward(try conv2.backward(gradient, workspace)!, workspace)
        let dProjected = try workspace.take([dH.batch, dH.channels])
        for row in 0..<dH.batch * dH.channels {
            let line = dH.data + row * dH.spatial
            var total: Float = 0
            for i in 0..<dH.spatial { total += line[i] }
            dProjected.data[row] = total
        }
        accumulate(dTime, try timeProjection.backward(dProjected, workspace))
        let dX = try norm1.backward(try resampleBackward(try conv1.backward(dH, workspace)!, workspace), workspace)
        accumulate(dX, try resampleBackward(try shortcut?.backward(gradient, workspace)! ?? gradient, workspace))
        return dX
    }
}

/// Scaled dot-product attention between token buffers q [B, Nq, H·D] and k, v [B, Nk, H·D], keeping them for the
/// backward pass.
final class TrainableAttentionCore {
    let heads: Int, headDimension: Int
    private var saved: (q: Buffer, k: Buffer, v: Buffer)?

    init(heads: Int, headDimension: Int) { (self.heads, self.headDimension) = (heads, headDimension) }

    private var inner: Int { heads * headDimension }

    func forward(query q: Buffer, key k: Buffer, value v: Buffer, _ workspace: Workspace) throws -> Buffer {
        let (batch, queries, keys) = (q.shape[0], q.shape[1], k.shape[1])
        let out = try workspace.take(q.shape)
        try attend(out.data, query: AttentionOperand(base: q.data, stride: inner), key: AttentionOperand(base: k.data, stride: inner),
                   value: AttentionOperand(base: v.data, stride: inner), batch: batch, queries: queries, keys: keys, heads: heads,
                   headDimension: headDimension, workspace)
        saved = workspace.keepsActivations ? (q, k, v) : nil
        return out
    }

    func backward(_ dOut: Buffer, _ workspace: Workspace) throws -> (query: Buffer, key: Buffer, value: Buffer) {
        guard let (q, k, v) = saved else { throw TensorError("attention: backward without a training forward before it") }
        saved = nil
        let (batch, queries, keys) = (q.shape[0], q.shape[1], k.shape[1])
        let dQ = try workspace.take(q.shape), dK = try workspace.take(k.shape), dV = try workspace.take(v.shape)
        let perThread = max(attentionScoresPerThread, 2 * keys), threads = min(Parallel.threads, batch * heads)
        let scores = try workspace.scratch(.scores, threads * perThread)
        func operand(_ buffer: Buffer) -> AttentionOperand { AttentionOperand(base: buffer.data, stride: inner) }
        attentionBackward(dQ: operand(dQ), dK: operand(dK), dV: operand(dV), dOut: operand(dOut), operand(q), operand(k), operand(v),
                          scores: scores, scoresPerThread: perThread, threads: threads, scale: 1 / Float(headDimension).squareRoot(),
                          batch: batch, queries: queries, keys: keys, heads: heads, headDimension: headDimension)
        return (dQ, dK, dV)
    }
}

/// UNet2DModel's self-attention, as SpatialSelfAttention in AttentionBlocks.swift computes it (with its legacy key
/// names).
final class TrainableSpatialSelfAttention {
    let groupNorm: TrainableGroupNorm
    let query: TrainableLinear, key: TrainableLinear, value: TrainableLinear, output: TrainableLinear
    let core: TrainableAttentionCore
    let rescale: Float

    init(_ parameters: ParameterBuilder, _ prefix: String, channels: Int, headDimension: Int, groups: Int, eps: Double,
         rescale: Double) throws {
        let heads = channels / headDimension, inner = heads * headDimension
        groupNorm = try TrainableGroupNorm(parameters, "\(prefix).group_norm", groups: groups, channels: channels, eps: eps)
        let legacy = !parameters.contains("\(prefix).to_q.weight") && parameters.contains("\(prefix).query.weight")
        let names = legacy ? ["query", "key", "value", "proj_attn"] : ["to_q", "to_k", "to_v", "to_out.0"]
        query = try TrainableLinear(parameters, "\(prefix).\(names[0])", channels, inner)
        key = try TrainableLinear(parameters, "\(prefix).\(names[1])", channels, inner)
        value = try TrainableLinear(parameters, "\(prefix).\(names[2])", channels, inner)
        output = try TrainableLinear(parameters, "\(prefix).\(names[3])", inner, channels)
        core = TrainableAttentionCore(heads: heads, headDimension: headDimension)
        self.rescale = Float(rescale)
    }

    func forward(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
        let (batch, channels, tokens) = (x.batch, x.channels, x.spatial)
        let normalized = try transposeLastTwo(try groupNorm.forward(x, workspace), rows: channels, columns: tokens,
                                              as: [batch, tokens, channels], workspace)
        let attended = try core.forward(query: try query.forward(normalized, workspace), key: try key.forward(normalized, workspace),
                                        value: try value.forward(normalized, workspace), workspace)
        let out = try transposeLastTwo(try output.forward(attended, workspace), rows: tokens, columns: channels, as: x.shape, workspace)
        accumulate(out, x)
        if rescale != 1 { scale(out, by: 1 / rescale) }
        return out
    }

    func backward(_ dOut: Buffer, _ workspace: Workspace) throws -> Buffer {
        let gradient = try divided(dOut, by: rescale, workspace)
        let (batch, channels, tokens) = (gradient.batch, gradient.channels, gradient.spatial)
        let dAttended = try output.backward(try transposeLastTwo(gradient, rows: channels, columns: tokens, as: [batch, tokens, channels],
                                                                 workspace), workspace)
        let (dQ, dK, dV) = try core.backward(dAttended, workspace)
        let dNormalized = try query.backward(dQ, workspace)
        accumulate(dNormalized, try key.backward(dK, workspace))
        accumulate(dNormalized, try value.backward(dV, workspace))
        let dX = try groupNorm.backward(try transposeLastTwo(dNormalized, rows: tokens, columns: channels, as: gradient.shape, workspace),
                                        workspace)
        accumulate(dX, gradient)
        return dX
    }
}

/// One attention of a BasicTransformerBlock, as TransformerAttention in AttentionBlocks.swift: unbiased to_q, to_k,
/// to_v, a biased to_out.0; k and v from the tokens themselves or from the context.
final class TrainableTransformerAttention {
    let query: TrainableLinear, key: TrainableLinear, value: TrainableLinear, output: TrainableLinear
    let core: TrainableAttentionCore
    let attendsToContext: Bool

    /// A nil `contextDimension` makes a self-attention.
    init(_ parameters: ParameterBuilder, _ prefix: String, dimension: Int, heads: Int, headDimension: Int, contextDimension: Int?) throws {
        let inner = heads * headDimension, source = contextDimension ?? dimension
        query = try TrainableLinear(parameters, "\(prefix).to_q", dimension, inner, bias: false)
        key = try TrainableLinear(parameters, "\(prefix).to_k", source, inner, bias: false)
        value = try TrainableLinear(parameters, "\(prefix).to_v", source, inner, bias: false)
        output = try TrainableLinear(parameters, "\(prefix).to_out.0", inner, dimension)
        core = TrainableAttentionCore(heads: heads, headDimension: headDimension)
        attendsToContext = contextDimension != nil
    }

    /// The attention of `normalized` [B, N, dim] to itself or to `context` [B, S, contextDimension].
    func forward(_ normalized: Buffer, context: Buffer?, _ workspace: Workspace) throws -> Buffer {
        let source = attendsToContext ? context! : normalized
        let attended = try core.forward(query: try query.forward(normalized, workspace), key: try key.forward(source, workspace),
                                        value: try value.forward(source, workspace), workspace)
        return try output.forward(attended, workspace)
    }

    /// The gradient of `normalized`; the context's, for a cross-attention, is added to `dContext`.
    func backward(_ dOut: Buffer, dContext: Buffer?, _ workspace: Workspace) throws -> Buffer {
        let (dQ, dK, dV) = try core.backward(try output.backward(dOut, workspace), workspace)
        let dNormalized = try query.backward(dQ, workspace)
        let dSource = try key.backward(dK, workspace)
        accumulate(dSource, try value.backward(dV, workspace))
        accumulate(attendsToContext ? dContext! : dNormalized, dSource)
        return dNormalized
    }
}

/// diffusers' BasicTransformerBlock as BasicTransformerBlock in AttentionBlocks.swift computes it, on tokens
/// [B, N, dim]: h += attn1(norm1(h)); h += attn2(norm2(h), context); h += ff(norm3(h)).
final class TrainableBasicTransformerBlock {
    let norm1: TrainableLayerNorm, attention1: TrainableTransformerAttention
    let norm2: TrainableLayerNorm, attention2: TrainableTransformerAttention
    let norm3: TrainableLayerNorm, feedForwardIn: TrainableLinear, feedForwardOut: TrainableLinear
    let feedForwardDimension: Int
    private var projected: Buffer?

    init(_ parameters: ParameterBuilder, _ prefix: String, dimension: Int, heads: Int, headDimension: Int, contextDimension: Int,
         onlyCrossAttention: Bool) throws {
        norm1 = try TrainableLayerNorm(parameters, "\(prefix).norm1", features: dimension)
        attention1 = try TrainableTransformerAttention(parameters, "\(prefix).attn1", dimension: dimension, heads: heads,
                                                       headDimension: headDimension,
                                                       contextDimension: onlyCrossAttention ? contextDimension : nil)
        norm2 = try TrainableLayerNorm(parameters, "\(prefix).norm2", features: dimension)
        attention2 = try TrainableTransformerAttention(parameters, "\(prefix).attn2", dimension: dimension, heads: heads,
                                                       headDimension: headDimension, contextDimension: contextDimension)
        norm3 = try TrainableLayerNorm(parameters, "\(prefix).norm3", features: dimension)
        feedForwardDimension = 4 * dimension
        feedForwardIn = try TrainableLinear(parameters, "\(prefix).ff.net.0.proj", dimension, 2 * feedForwardDimension)
        feedForwardOut = try TrainableLinear(parameters, "\(prefix).ff.net.2", feedForwardDimension, dimension)
    }

    func forward(_ h: Buffer, context: Buffer, _ workspace: Workspace) throws -> Buffer {
        let h1 = try attention1.forward(try norm1.forward(h, workspace), context: context, workspace)
        accumulate(h1, h)
        let h2 = try attention2.forward(try norm2.forward(h1, workspace), context: context, workspace)
        accumulate(h2, h1)
        let projected = try feedForwardIn.forward(try norm3.forward(h2, workspace), workspace)
        let rows = projected.count / (2 * feedForwardDimension)
        let gated = try workspace.take(Array(projected.shape.dropLast()) + [feedForwardDimension])
        gegluForward(gated.data, projected.data, rows: rows, features: feedForwardDimension)
        self.projected = workspace.kept(projected)
        let h3 = try feedForwardOut.forward(gated, workspace)
        accumulate(h3, h2)
        return h3
    }

    func backward(_ dOut: Buffer, dContext: Buffer, _ workspace: Workspace) throws -> Buffer {
        guard let projected else { throw TensorError("transformer block: backward without a training forward before it") }
        self.projected = nil
        let dGated = try feedForwardOut.backward(dOut, workspace)
        let dProjected = try workspace.take(projected.shape)
        gegluBackward(dProjected.data, dOut: dGated.data, input: projected.data, rows: dGated.count / feedForwardDimension,
                      features: feedForwardDimension)
        let dH2 = try norm3.backward(try feedForwardIn.backward(dProjected, workspace), workspace)
        accumulate(dH2, dOut)
        let dH1 = try norm2.backward(try attention2.backward(dH2, dContext: dContext, workspace), workspace)
        accumulate(dH1, dH2)
        let dH = try norm1.backward(try attention1.backward(dH1, dContext: dContext, workspace), workspace)
        accumulate(dH, dH1)
        return dH
    }
}

/// diffusers' Transformer2DModel as Transformer2D in AttentionBlocks.swift computes it.
final class TrainableTransformer2D {
    let norm: TrainableGroupNorm
    let projectionIn: TrainableLinear, projectionOut: TrainableLinear
    let blocks: [TrainableBasicTransformerBlock]

    init(_ parameters: ParameterBuilder, _ prefix: String, channels: Int, heads: Int, layers: Int, contextDimension: Int, groups: Int,
         linearProjection: Bool, onlyCrossAttention: Bool) throws {
        let headDimension = channels / heads, inner = heads * headDimension
        norm = try TrainableGroupNorm(parameters, "\(prefix).norm", groups: groups, channels: channels, eps: 1e-6)
        projectionIn = try TrainableLinear(parameters, "\(prefix).proj_in", channels, inner, pointwiseConv: !linearProjection)
        blocks = try (0..<layers).map {
            try TrainableBasicTransformerBlock(parameters, "\(prefix).transformer_blocks.\($0)", dimension: inner, heads: heads,
                                               headDimension: headDimension, contextDimension: contextDimension,
                                               onlyCrossAttention: onlyCrossAttention)
        }
        projectionOut = try TrainableLinear(parameters, "\(prefix).proj_out", inner, channels, pointwiseConv: !linearProjection)
    }

    func forward(_ x: Buffer, context: Buffer, _ workspace: Workspace) throws -> Buffer {
        let (batch, channels, tokens) = (x.batch, x.channels, x.spatial)
        let normalized = try transposeLastTwo(try norm.forward(x, workspace), rows: channels, columns: tokens,
                                              as: [batch, tokens, channels], workspace)
        var h = try projectionIn.forward(normalized, workspace)
        for block in blocks { h = try block.forward(h, context: context, workspace) }
        let out = try transposeLastTwo(try projectionOut.forward(h, workspace), rows: tokens, columns: channels, as: x.shape, workspace)
        accumulate(out, x)
        return out
    }

    func backward(_ dOut: Buffer, dContext: Buffer, _ workspace: Workspace) throws -> Buffer {
        let (batch, channels, tokens) = (dOut.batch, dOut.channels, dOut.spatial)
        var dH = try projectionOut.backward(try transposeLastTwo(dOut, rows: channels, columns: tokens, as: [batch, tokens, channels],
                                                                 workspace), workspace)
        for block in blocks.reversed() { dH = try block.backward(dH, dContext: dContext, workspace) }
        let dX = try norm.backward(try transposeLastTwo(try projectionIn.backward(dH, workspace), rows: tokens, columns: channels,
                                                        as: dOut.shape, workspace), workspace)
        accumulate(dX, dOut)
        return dX
    }
}
