import COpenBLAS

/// c[m, n] = alpha · op(a) · op(b) + beta · c, row-major, op transposing when asked — cblas_sgemm. OpenBLAS runs it
/// on every core.
@inline(__always) func sgemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                             _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int, beta: Float,
                             _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    guard m > 0, n > 0 else { return }
    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Each of `rows` rows of `out` (length `length`) set to, or with `accumulate` increased by, `bias` (zeros when nil).
/// Returns the beta the following sgemm needs: 0 when nothing was written, else 1.
@inline(__always) func prepareRows(_ out: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>?, accumulate: Bool,
                                   rows: Int, length: Int) -> Float {
    guard let bias else { return accumulate ? 1 : 0 }
    let o = UncheckedSendable(value: out), b = UncheckedSendable(value: bias)
    Parallel.forEach(rows, grain: max(1, 32768 / max(length, 1))) { range in
        for row in range {
            let target = o.value + row * length
            if accumulate {
                for i in 0..<length { target[i] += b.value[i] }
            } else {
                target.update(from: b.value, count: length)
            }
        }
    }
    return 1
}

/// out[rows, O] = input[rows, I] · weight[O, I]ᵀ + bias[O] (out += … with `accumulate`) — torch.nn.functional.linear.
func linearForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                   _ bias: UnsafePointer<Float>?, accumulate: Bool = false, rows: Int, inFeatures: Int, outFeatures: Int) {
    let beta = prepareRows(out, bias, accumulate: accumulate, rows: rows, length: outFeatures)
    sgemm(transposeB: true, m: rows, n: outFeatures, k: inFeatures, input, lda: inFeatures, weight, ldb: inFeatures,
          beta: beta, out, ldc: outFeatures)
}

/// out[B, T, O] = input[B, I, T]ᵀ · weight[O, I]ᵀ + bias[O]: a linear layer (or 1×1 conv) reading channels-first
/// features and writing tokens — diffusers' Attention `to_q` on `hidden_states.view(B, C, H·W).transpose(1, 2)`, and
/// Transformer2DModel's `proj_in` followed by its permute to [B, H·W, inner].
func linearFromChannelsForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                               _ bias: UnsafePointer<Float>?, batch: Int, tokens: Int, inFeatures: Int, outFeatures: Int) {
    let beta = prepareRows(out, bias, accumulate: false, rows: batch * tokens, length: outFeatures)
    for b in 0..<batch {
        sgemm(transposeA: true, transposeB: true, m: tokens, n: outFeatures, k: inFeatures, input + b * inFeatures * tokens,
              lda: tokens, weight, ldb: inFeatures, beta: beta, out + b * tokens * outFeatures, ldc: outFeatures)
    }
}

/// out[B, O, T] = weight[O, I] · input[B, T, I]ᵀ + bias[O] (out += … with `accumulate`): tokens back to channels
/// first — Attention's `to_out[0]` before its transpose back to [B, C, H, W], Transformer2DModel's `proj_out`.
func linearToChannelsForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                             _ bias: UnsafePointer<Float>?, accumulate: Bool = false, batch: Int, tokens: Int, inFeatures: Int,
                             outFeatures: Int) {
    for b in 0..<batch {
        let target = out + b * outFeatures * tokens
        var beta: Float = accumulate ? 1 : 0
        if let bias {
            addChannelBias(target, bias, nil, accumulate: accumulate, channels: outFeatures, spatial: tokens)
            beta = 1
        }
        sgemm(transposeB: true, m: outFeatures, n: tokens, k: inFeatures, weight, lda: inFeatures, input + b * tokens * inFeatures,
              ldb: inFeatures, beta: beta, target, ldc: tokens)
    }
}

/// out[c, 0..<S] = bias[c] + extra[c] (or += with `accumulate`) for each channel of one image.
@inline(__always) func addChannelBias(_ out: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>?, _ extra: UnsafePointer<Float>?,
                                      accumulate: Bool, channels: Int, spatial: Int) {
    let o = UncheckedSendable(value: out), b = UncheckedSendable(value: bias), e = UncheckedSendable(value: extra)
    Parallel.forEach(channels, grain: max(1, 32768 / max(spatial, 1))) { range in
        for c in range {
            let value = (b.value?[c] ?? 0) + (e.value?[c] ?? 0)
            let target = o.value + c * spatial
            if accumulate {
                for i in 0..<spatial { target[i] += value }
            } else {
                target.update(repeating: value, count: spatial)
            }
        }
    }
}
