import KiriTensor

/// out[B, T, H·D] = softmax(q·kᵀ · scale + causal mask)·v, query t seeing keys 0...t, over q, k, v[B, T, ·] (strided
/// as `AttentionOperand`) — F.scaled_dot_product_attention with the causal mask of transformers' create_causal_mask,
/// as CLIPTextModel calls it. Shaped as `attentionForward`: (batch, head, chunk of queries) items shared over
/// `threads`, each with its own `scoresPerThread` floats of `scores` (at least T + 1); a chunk multiplies only the
/// keys its last query sees, and the masked scores in that block are zeros when v is applied. A stopped run skips
/// the items left.
func causalAttentionForward(_ out: UnsafeMutablePointer<Float>, outStride: Int, _ q: AttentionOperand, _ k: AttentionOperand,
                            _ v: AttentionOperand, scores: UnsafeMutablePointer<Float>, scoresPerThread: Int, threads: Int,
                            scale: Float, batch: Int, tokens: Int, heads: Int, headDimension: Int) {
    let chunk = max(1, min(tokens, scoresPerThread / (tokens + 1)))
    let chunksPerHead = (tokens + chunk - 1) / chunk
    let items = batch * heads * chunksPerHead
    let o = UncheckedSendable(value: out), s = UncheckedSendable(value: scores), operands = UncheckedSendable(value: (q, k, v))
    let cancellation = Cancellation.current
    Parallel.split(threads, pieces: threads) { pieces in
        for piece in pieces {
            let (q, k, v) = operands.value
            let scores = s.value + piece * scoresPerThread, inverseSums = scores + chunk * tokens
            for item in items * piece / threads..<items * (piece + 1) / threads {
                if cancellation?.isStopped ?? false { return }
                let b = item / (heads * chunksPerHead), h = item / chunksPerHead % heads, start = item % chunksPerHead * chunk
                let rows = min(chunk, tokens - start), keys = start + rows, column = h * headDimension
                sgemm(transposeB: true, m: rows, n: keys, k: headDimension, alpha: scale,
                      q.base + (b * tokens + start) * q.stride + column, lda: q.stride,
                      k.base + b * tokens * k.stride + column, ldb: k.stride, beta: 0, scores, ldc: keys)
                for row in 0..<rows {
                    let line = scores + row * keys, visible = start + row + 1
                    softmaxRows(line, rows: 1, columns: visible, inverseSums: inverseSums + row)
                    (line + visible).update(repeating: 0, count: keys - visible)
                }
                let target = o.value + (b * tokens + start) * outStride + column
                sgemm(m: rows, n: headDimension, k: keys, scores, lda: keys, v.base + b * tokens * v.stride + column, ldb: v.stride,
                      beta: 0, target, ldc: outStride)
                for row in 0..<rows {
                    let line = target + row * outStride, inverse = inverseSums[row]
                    for i in 0..<headDimension { line[i] *= inverse }
                }
            }
        }
    }
}
