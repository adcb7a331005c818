import KiriTensor

/// Each of `rows` rows of `out` (`length` floats, `stride` apart) set to, or with `accumulate` increased by, `bias`
/// (zeros when nil). Returns the beta the following sgemm needs: 0 when nothing was written.
@inline(__always) func prepareRows(_ out: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>?, accumulate: Bool,
                                   rows: Int, length: Int, stride: Int) -> Float {
    guard let bias else { return accumulate ? 1 : 0 }
    for row in 0..<rows {
        let target = out + row * stride
        if accumulate {
            for i in 0..<length { target[i] += bias[i] }
        } else {
            target.update(from: bias, count: length)
        }
    }
    return 1
}

/// For each chunk of the weight in turn, float32 [chunk.count, I], each of `batch` images' `tokens` split over the
/// cores: `body(chunk, floats, tokens, image)`, each call one share.
private func forEachShare(_ weight: WeightChunks, scratch: UnsafeMutablePointer<Float>?, batch: Int, tokens: Int,
                          _ body: (Range<Int>, UnsafePointer<Float>, Range<Int>, Int) -> Void) {
    weight.forEach(scratch: scratch) { chunk, floats in
        let flops = 2 * batch * tokens * weight.weight.columns * chunk.count
        Parallel.split(tokens, pieces: Parallel.pieces(flops: flops)) { range in
            for image in 0..<batch { body(chunk, floats, range, image) }
        }
    }
}

/// out[rows, O] = input[rows, I] · weight[O, I]ᵀ + bias[O] (out += … with `accumulate`) — torch.nn.functional.linear.
/// For each chunk of the weight, rows are split over the cores (Parallel.pieces), each share one single-threaded
/// sgemm. `scratch` holds `weight.scratchCount` floats.
func linearForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: WeightChunks,
                   _ bias: UnsafePointer<Float>?, accumulate: Bool = false, rows: Int, scratch: UnsafeMutablePointer<Float>?) {
    let (inFeatures, outFeatures) = (weight.weight.columns, weight.weight.rows)
    forEachShare(weight, scratch: scratch, batch: 1, tokens: rows) { chunk, w, range, _ in
        let target = out + range.lowerBound * outFeatures + chunk.lowerBound
        let beta = prepareRows(target, bias.map { $0 + chunk.lowerBound }, accumulate: accumulate, rows: range.count,
                               length: chunk.count, stride: outFeatures)
        sgemm(transposeB: true, m: range.count, n: chunk.count, k: inFeatures, input + range.lowerBound * inFeatures,
              lda: inFeatures, w, ldb: inFeatures, beta: beta, target, ldc: outFeatures)
    }
}

/// out[B, T, O] = input[B, I, T]ᵀ · weight[O, I]ᵀ + bias[O]: a linear layer (or 1×1 conv) reading channels-first
/// features and writing tokens — diffusers' Attention `to_q` on `hidden_states.view(B, C, H·W).transpose(1, 2)`, and
/// Transformer2DModel's `proj_in` followed by its permute to [B, H·W, inner]. Tokens are split over the cores.
func linearFromChannelsForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: WeightChunks,
                               _ bias: UnsafePointer<Float>?, batch: Int, tokens: Int, scratch: UnsafeMutablePointer<Float>?) {
    let (inFeatures, outFeatures) = (weight.weight.columns, weight.weight.rows)
    forEachShare(weight, scratch: scratch, batch: batch, tokens: tokens) { chunk, w, range, image in
        let target = out + (image * tokens + range.lowerBound) * outFeatures + chunk.lowerBound
        let beta = prepareRows(target, bias.map { $0 + chunk.lowerBound }, accumulate: false, rows: range.count,
                               length: chunk.count, stride: outFeatures)
        sgemm(transposeA: true, transposeB: true, m: range.count, n: chunk.count, k: inFeatures,
              input + image * inFeatures * tokens + range.lowerBound, lda: tokens, w, ldb: inFeatures, beta: beta,
              target, ldc: outFeatures)
    }
}

/// out[B, O, T] = weight[O, I] · input[B, T, I]ᵀ + bias[O] (out += … with `accumulate`): tokens back to channels
/// first — Attention's `to_out[0]` before its transpose back to [B, C, H, W], Transformer2DModel's `proj_out`.
/// Tokens are split over the cores.
func linearToChannelsForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: WeightChunks,
                             _ bias: UnsafePointer<Float>?, accumulate: Bool = false, batch: Int, tokens: Int,
                             scratch: UnsafeMutablePointer<Float>?) {
    let (inFeatures, outFeatures) = (weight.weight.columns, weight.weight.rows)
    forEachShare(weight, scratch: scratch, batch: batch, tokens: tokens) { chunk, w, range, image in
        let target = out + (image * outFeatures + chunk.lowerBound) * tokens + range.lowerBound
        var beta: Float = accumulate ? 1 : 0
        if let bias {
            for channel in chunk {
                let line = target + (channel - chunk.lowerBound) * tokens
                if accumulate {
                    for i in 0..<range.count { line[i] += bias[channel] }
                } else {
                    line.update(repeating: bias[channel], count: range.count)
                }
            }
            beta = 1
        }
        sgemm(transposeB: true, m: chunk.count, n: range.count, k: inFeatures, w, lda: inFeatures,
              input + (image * tokens + range.lowerBound) * inFeatures, ldb: inFeatures, beta: beta, target, ldc: tokens)
    }
}

/// The gradients of linearForward (torch.nn.functional.linear's backward) for a float32 weight[O, I]:
/// dInput[rows, I] = dOut[rows, O] · weight (nil: not wanted), and dWeight[O, I] += dOut[rows, O]ᵀ · input[rows, I],
/// dBias[O] += Σ over rows of dOut, accumulated as parameter gradients are across a batch's calls.
func linearBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
                    dOut: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                    rows: Int, inFeatures: Int, outFeatures: Int) {
    if let dInput {
        sgemm(m: rows, n: inFeatures, k: outFeatures, dOut, lda: outFeatures, weight, ldb: inFeatures, beta: 0,
              dInput, ldc: inFeatures)
    }
    sgemm(transposeA: true, m: outFeatures, n: inFeatures, k: rows, dOut, lda: outFeatures, input, ldb: inFeatures,
          beta: 1, dWeight, ldc: inFeatures)
    guard let dBias else { return }
    for row in 0..<rows {
        let line = dOut + row * outFeatures
        for o in 0..<outFeatures { dBias[o] += line[o] }
    }
}
