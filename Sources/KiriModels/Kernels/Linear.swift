import KiriTensor

/// Each of `rows` rows of `out` (length `length`) set to, or with `accumulate` increased by, `bias` (zeros when nil);
/// single-threaded, for one thread's share. Returns the beta the following sgemm needs: 0 when nothing was written.
@inline(__always) func prepareRows(_ out: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>?, accumulate: Bool,
                                   rows: Int, length: Int) -> Float {
    guard let bias else { return accumulate ? 1 : 0 }
    for row in 0..<rows {
        let target = out + row * length
        if accumulate {
            for i in 0..<length { target[i] += bias[i] }
        } else {
            target.update(from: bias, count: length)
        }
    }
    return 1
}

/// out[rows, O] = input[rows, I] · weight[O, I]ᵀ + bias[O] (out += … with `accumulate`) — torch.nn.functional.linear.
/// Rows are split over the cores (Parallel.pieces), each share one single-threaded sgemm.
func linearForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                   _ bias: UnsafePointer<Float>?, accumulate: Bool = false, rows: Int, inFeatures: Int, outFeatures: Int) {
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input), w = UncheckedSendable(value: weight)
    let b = UncheckedSendable(value: bias)
    Parallel.split(rows, pieces: Parallel.pieces(flops: 2 * rows * inFeatures * outFeatures)) { range in
        let target = o.value + range.lowerBound * outFeatures
        let beta = prepareRows(target, b.value, accumulate: accumulate, rows: range.count, length: outFeatures)
        sgemm(transposeB: true, m: range.count, n: outFeatures, k: inFeatures, x.value + range.lowerBound * inFeatures,
              lda: inFeatures, w.value, ldb: inFeatures, beta: beta, target, ldc: outFeatures)
    }
}

/// out[B, T, O] = input[B, I, T]ᵀ · weight[O, I]ᵀ + bias[O]: a linear layer (or 1×1 conv) reading channels-first
/// features and writing tokens — diffusers' Attention `to_q` on `hidden_states.view(B, C, H·W).transpose(1, 2)`, and
/// Transformer2DModel's `proj_in` followed by its permute to [B, H·W, inner]. Tokens are split over the cores.
func linearFromChannelsForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                               _ bias: UnsafePointer<Float>?, batch: Int, tokens: Int, inFeatures: Int, outFeatures: Int) {
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input), w = UncheckedSendable(value: weight)
    let b = UncheckedSendable(value: bias)
    Parallel.split(tokens, pieces: Parallel.pieces(flops: 2 * batch * tokens * inFeatures * outFeatures)) { range in
        for image in 0..<batch {
            let target = o.value + (image * tokens + range.lowerBound) * outFeatures
            let beta = prepareRows(target, b.value, accumulate: false, rows: range.count, length: outFeatures)
            sgemm(transposeA: true, transposeB: true, m: range.count, n: outFeatures, k: inFeatures,
                  x.value + image * inFeatures * tokens + range.lowerBound, lda: tokens, w.value, ldb: inFeatures, beta: beta,
                  target, ldc: outFeatures)
        }
    }
}

/// out[B, O, T] = weight[O, I] · input[B, T, I]ᵀ + bias[O] (out += … with `accumulate`): tokens back to channels
/// first — Attention's `to_out[0]` before its transpose back to [B, C, H, W], Transformer2DModel's `proj_out`.
/// Tokens are split over the cores.
func linearToChannelsForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                             _ bias: UnsafePointer<Float>?, accumulate: Bool = false, batch: Int, tokens: Int, inFeatures: Int,
                             outFeatures: Int) {
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input), w = UncheckedSendable(value: weight)
    let b = UncheckedSendable(value: bias)
    Parallel.split(tokens, pieces: Parallel.pieces(flops: 2 * batch * tokens * inFeatures * outFeatures)) { range in
        for image in 0..<batch {
            let target = o.value + image * outFeatures * tokens + range.lowerBound
            var beta: Float = accumulate ? 1 : 0
            if let bias = b.value {
                for channel in 0..<outFeatures {
                    let line = target + channel * tokens
                    if accumulate {
                        for i in 0..<range.count { line[i] += bias[channel] }
                    } else {
                        line.update(repeating: bias[channel], count: range.count)
                    }
                }
                beta = 1
            }
            sgemm(transposeB: true, m: outFeatures, n: range.count, k: inFeatures, w.value, lda: inFeatures,
                  x.value + (image * tokens + range.lowerBound) * inFeatures, ldb: inFeatures, beta: beta, target, ldc: tokens)
        }
    }
}
