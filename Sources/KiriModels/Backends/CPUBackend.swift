import KiriTensor

/// The optimised kernels of Kernels/ (Swift SIMD, OpenBLAS sgemm, KiriKernels' per-ISA C): a 3×3 stride-1 conv by
/// Winograd with GroupNorm and up-sampling read in its input transform, the others by im2col; weights widened from
/// their stored format a chunk at a time; attention in chunks of queries.
final class CPUBackend: Backend {
    func conv2d(_ conv: Conv2d, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ shape: ConvolutionShape,
                upsampled: Bool, normalizedBy normalization: InputNormalization?, extraBias: UnsafePointer<Float>?,
                accumulate: Bool, _ workspace: Workspace) throws {
        if let winogradWeight = conv.winogradWeight {
            let tiling = WinogradTiling(batch: shape.batch, height: shape.height, width: shape.width)
            let scratch = try workspace.scratch(.columns, winogradWeight.scratchCount(tiling))
            winogradConv2dForward(out, input, winogradWeight, conv.bias.data, extraBias: extraBias, accumulate: accumulate,
                                  scratch: scratch, batch: shape.batch, height: shape.height, width: shape.width,
                                  upsampled: upsampled, normalization: normalization?.map)
            return
        }
        // The other convs read a normalised, up-sampled copy.
        let sourceShape = [shape.batch, shape.inChannels] + (upsampled ? [shape.height / 2, shape.width / 2] : [shape.height, shape.width])
        let normalized = try normalization?.apply(input, sourceShape, workspace)
        var upsampling: Buffer?
        if upsampled {
            let buffer = try workspace.take([shape.batch, shape.inChannels, shape.height, shape.width])
            upsampleNearestForward(buffer.data, normalized.map { UnsafePointer($0.data) } ?? input, planes: shape.batch * shape.inChannels,
                                   height: shape.height / 2, width: shape.width / 2, outHeight: shape.height, outWidth: shape.width)
            upsampling = buffer
        }
        let source = upsampling.map { UnsafePointer($0.data) } ?? normalized.map { UnsafePointer($0.data) } ?? input
        let plan = ConvolutionPlan(shape)
        let count = plan.columnsCount(conv.chunks)
        let columns = count > 0 ? try workspace.scratch(.columns, count) : nil
        withExtendedLifetime((normalized, upsampling)) {
            conv2dForward(out, source, conv.chunks, conv.bias.data, extraBias: extraBias, accumulate: accumulate, columns: columns, plan)
        }
    }

    func linear(_ linear: Linear, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ layout: LinearLayout,
                accumulate: Bool, _ workspace: Workspace) throws {
        let chunks = linear.chunks
        let scratch = chunks.scratchCount > 0 ? try workspace.scratch(.weights, chunks.scratchCount) : nil
        switch layout {
        case .rows(let rows):
            linearForward(out, input, chunks, linear.bias?.data, accumulate: accumulate, rows: rows, scratch: scratch)
        case .tokensFromChannels(let batch, let tokens):
            precondition(!accumulate, "a linear layer writing tokens from channels does not accumulate")
            linearFromChannelsForward(out, input, chunks, linear.bias?.data, batch: batch, tokens: tokens, scratch: scratch)
        case .channelsFromTokens(let batch, let tokens):
            linearToChannelsForward(out, input, chunks, linear.bias?.data, accumulate: accumulate, batch: batch, tokens: tokens,
                                    scratch: scratch)
        }
    }

    func groupNormStatistics(_ norm: GroupNorm, mean: UnsafeMutablePointer<Float>, scale: UnsafeMutablePointer<Float>,
                             _ input: UnsafePointer<Float>, batch: Int, spatial: Int) {
        KiriModels.groupNormStatistics(mean: mean, scale: scale, input, norm.weight.data, eps: norm.eps, batch: batch,
                                       channels: norm.channels, spatial: spatial, groups: norm.groups)
    }

    func normalize(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ map: ChannelNormalization, batch: Int,
                   spatial: Int) {
        channelNormalizationForward(out, input, map, batch: batch, spatial: spatial)
    }

    func layerNorm(_ norm: LayerNorm, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int) {
        layerNormForward(out, input, norm.weight.data, norm.bias.data, eps: norm.eps, rows: rows, features: norm.features)
    }

    func attention(into out: UnsafeMutablePointer<Float>, outStride: Int, query: AttentionOperand, key: AttentionOperand,
                   value: AttentionOperand, batch: Int, queries: Int, keys: Int, heads: Int, headDimension: Int, causal: Bool,
                   _ workspace: Workspace) throws {
        let perThread = attentionScoreFloats(queries: queries, keys: keys)
        // Keys times the output's size may pass Int.max for inputs the memory cap refuses later; the causal mask
        // halves the products.
        let (flops, overflow) = ((causal ? 2 : 4) * batch * queries * heads * headDimension).multipliedReportingOverflow(by: keys)
        let threads = min(overflow ? Parallel.threads : Parallel.threads(flops: flops), batch * heads * queries)
        let scores = try workspace.scratch(.scores, threads * perThread)
        attentionForward(out, outStride: outStride, query, key, value, scores: scores, scoresPerThread: perThread, threads: threads,
                         scale: 1 / Float(headDimension).squareRoot(), batch: batch, queries: queries, keys: keys, heads: heads,
                         headDimension: headDimension, causal: causal)
    }

    func geglu(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int, features: Int) {
        gegluForward(out, input, rows: rows, features: features)
    }

    func activation(_ activation: Activation, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, count: Int) {
        activationForward(out, input, activation, count: count)
    }
}
