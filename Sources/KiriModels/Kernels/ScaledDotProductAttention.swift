import KiriTensor

/// Each of `rows` rows of x[rows, columns] replaced by its softmax — torch.softmax(dim=-1), with the row maximum
/// subtracted first. Rows are split over the cores.
func softmaxForward(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
    let data = UncheckedSendable(value: x)
    Parallel.forEach(rows, grain: max(1, 8192 / max(columns, 1))) { range in
        softmaxRows(data.value + range.lowerBound * columns, rows: range.count, columns: columns)
    }
}

/// `softmaxForward` on the calling thread. With `inverseSums`, the rows are left as e^(x - max) and 1/Σ of each
/// is stored there instead, for a caller that can apply it to a smaller product later.
func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int, inverseSums: UnsafeMutablePointer<Float>? = nil) {
    for row in 0..<rows {
        let p = x + row * columns
        var largest = -Float.infinity
        var i = 0
        if columns >= 8 {
            var m = Vector.load(p)
            i = 8
            while i + 8 <= columns {
                m = maximum(m, Vector.load(p + i))
                i += 8
            }
            largest = m.max()
        }
        while i < columns {
            largest = max(largest, p[i])
            i += 1
        }
        let shift = Vector(repeating: largest)
        var total = Vector()
        i = 0
        while i + 8 <= columns {
            let e = vectorExp(Vector.load(p + i) - shift)
            e.store(p + i)
            total += e
            i += 8
        }
        var sum = total.sum()
        if i < columns {
            let tail = columns - i
            let e = vectorExp(Vector.load(p + i, count: tail) - shift)
            e.store(p + i, count: tail)
            for lane in 0..<tail { sum += e[lane] }
        }
        if let inverseSums {
            inverseSums[row] = 1 / sum
        } else {
            let inverse = Vector(repeating: 1 / sum)
            vectorMap(p, p, columns) { $0 * inverse }
        }
    }
}

/// Floats of attention scores a thread's chunk of queries may use: 4 MiB, so a 64×64 latent's 4096×4096 scores
/// per head go in chunks of 255 rows.
let attentionScoresPerThread = 1 << 20

/// The scores `attentionForward` gives each thread for Nq queries and Nk keys: a chunk of at least one query's Nk
/// scores and its sum, and no more than all of them.
func attentionScoreFloats(queries: Int, keys: Int) -> Int {
    min(max(attentionScoresPerThread, keys + 1), queries * (keys + 1))
}

/// Strided views of q, k, v and the output: head h of token t of batch element b is the `headDimension` floats at
/// `base + (b·tokens + t)·stride + h·headDimension`, so fused projections ([q | k | v] per token) need no copy.
struct AttentionOperand {
    var base: UnsafePointer<Float>
    var stride: Int
}

/// out[B, Nq, H·D] = softmax(q·kᵀ · scale)·v for every batch element and head, over q[B, Nq, ·], k and v[B, Nk, ·]
/// (strided as `AttentionOperand`) — F.scaled_dot_product_attention on [B, H, N, D] views, as diffusers'
/// AttnProcessor2_0 calls it. The work is (batch, head, chunk of queries) items, a contiguous run of them per
/// thread; each thread's chunk of scores, and a float per row, fill its own `scoresPerThread` floats of `scores` (at
/// least Nk + 1), so memory stays bounded however many tokens there are. The softmax's division is applied to the
/// [rows, D] output rather than the [rows, Nk] weights. A stopped run skips the items left.
///
/// With `causal` (queries == keys), query t sees keys 0...t, as the mask of transformers' create_causal_mask that
/// CLIPTextModel uses: a chunk multiplies only the keys its last query sees, and zeros the rest of its scores.
func attentionForward(_ out: UnsafeMutablePointer<Float>, outStride: Int, _ q: AttentionOperand, _ k: AttentionOperand,
                      _ v: AttentionOperand, scores: UnsafeMutablePointer<Float>, scoresPerThread: Int, threads: Int, scale: Float,
                      batch: Int, queries: Int, keys: Int, heads: Int, headDimension: Int, causal: Bool = false) {
    let chunk = max(1, min(queries, scoresPerThread / (keys + 1)))
    let chunksPerHead = (queries + chunk - 1) / chunk
    let items = batch * heads * chunksPerHead
    let o = UncheckedSendable(value: out), s = UncheckedSendable(value: scores), operands = UncheckedSendable(value: (q, k, v))
    let cancellation = Cancellation.current
    Parallel.split(threads, pieces: threads) { pieces in
        for piece in pieces {
            let (q, k, v) = operands.value
            let scores = s.value + piece * scoresPerThread, inverseSums = scores + chunk * keys
            for item in items * piece / threads..<items * (piece + 1) / threads {
                if cancellation?.isStopped ?? false { return }
                let b = item / (heads * chunksPerHead), h = item / chunksPerHead % heads, start = item % chunksPerHead * chunk
                let rows = min(chunk, queries - start), column = h * headDimension
                let seen = causal ? start + rows : keys
                sgemm(transposeB: true, m: rows, n: seen, k: headDimension, alpha: scale,
                      q.base + (b * queries + start) * q.stride + column, lda: q.stride,
                      k.base + b * keys * k.stride + column, ldb: k.stride, beta: 0, scores, ldc: seen)
                if causal {
                    for row in 0..<rows {
                        let line = scores + row * seen, visible = start + row + 1
                        softmaxRows(line, rows: 1, columns: visible, inverseSums: inverseSums + row)
                        (line + visible).update(repeating: 0, count: seen - visible)
                    }
                } else {
                    softmaxRows(scores, rows: rows, columns: keys, inverseSums: inverseSums)
                }
                let target = o.value + (b * queries + start) * outStride + column
                sgemm(m: rows, n: headDimension, k: seen, scores, lda: seen, v.base + b * keys * v.stride + column, ldb: v.stride,
                      beta: 0, target, ldc: outStride)
                for row in 0..<rows {
                    let line = target + row * outStride, inverse = inverseSums[row]
                    for i in 0..<headDimension { line[i] *= inverse }
                }
            }
        }
    }
}

/// The gradients of attentionForward (non-causal; F.scaled_dot_product_attention's backward): with P = softmax(q·kᵀ ·
/// scale) recomputed a chunk of queries at a time, dV = Pᵀ·dO, dS = P ⊙ (dO·vᵀ − rowsum(P ⊙ dO·vᵀ)),
/// dQ = dS·k · scale and dK = dSᵀ·q · scale, written into dQ, dK, dV strided as q, k, v are (a fused [q | k | v]
/// gradient needs no copy). Each (batch, head) is one item, done whole by one thread, so dK and dV sum their
/// chunks in the same order every run. `scores` holds `threads` × `scoresPerThread` floats, at least 2·Nk each.
func attentionBackward(dQ: AttentionOperand, dK: AttentionOperand, dV: AttentionOperand, dOut: AttentionOperand,
                       _ q: AttentionOperand, _ k: AttentionOperand, _ v: AttentionOperand, scores: UnsafeMutablePointer<Float>,
                       scoresPerThread: Int, threads: Int, scale: Float, batch: Int, queries: Int, keys: Int, heads: Int,
                       headDimension: Int) {
    let chunk = max(1, min(queries, scoresPerThread / (2 * keys)))
    let items = batch * heads
    let s = UncheckedSendable(value: scores), operands = UncheckedSendable(value: (q, k, v, dOut, dQ, dK, dV))
    Parallel.split(threads, pieces: threads) { pieces in
        for piece in pieces {
            let (q, k, v, dOut, dQ, dK, dV) = operands.value
            let p = s.value + piece * scoresPerThread, dP = p + chunk * keys
            for item in items * piece / threads..<items * (piece + 1) / threads {
                let b = item / heads, column = item % heads * headDimension
                let keyRows = k.base + b * keys * k.stride + column, valueRows = v.base + b * keys * v.stride + column
                let dKRows = UnsafeMutablePointer(mutating: dK.base) + b * keys * dK.stride + column
                let dVRows = UnsafeMutablePointer(mutating: dV.base) + b * keys * dV.stride + column
                var start = 0
                while start < queries {
                    let rows = min(chunk, queries - start), beta: Float = start == 0 ? 0 : 1
                    let queryRows = q.base + (b * queries + start) * q.stride + column
                    let gradient = dOut.base + (b * queries + start) * dOut.stride + column
                    sgemm(transposeB: true, m: rows, n: keys, k: headDimension, alpha: scale, queryRows, lda: q.stride,
                          keyRows, ldb: k.stride, beta: 0, p, ldc: keys)
                    softmaxRows(p, rows: rows, columns: keys)
                    sgemm(transposeA: true, m: keys, n: headDimension, k: rows, p, lda: keys, gradient, ldb: dOut.stride,
                          beta: beta, dVRows, ldc: dV.stride)
                    sgemm(transposeB: true, m: rows, n: keys, k: headDimension, gradient, lda: dOut.stride, valueRows,
                          ldb: v.stride, beta: 0, dP, ldc: keys)
                    for row in 0..<rows {
                        let weights = p + row * keys, line = dP + row * keys
                        var delta: Float = 0
                        for j in 0..<keys { delta += weights[j] * line[j] }
                        for j in 0..<keys { line[j] = weights[j] * (line[j] - delta) }
                    }
                    sgemm(m: rows, n: headDimension, k: keys, alpha: scale, dP, lda: keys, keyRows, ldb: k.stride, beta: 0,
                          UnsafeMutablePointer(mutating: dQ.base) + (b * queries + start) * dQ.stride + column, ldc: dQ.stride)
                    sgemm(transposeA: true, m: keys, n: headDimension, k: rows, alpha: scale, dP, lda: keys, queryRows,
                          ldb: q.stride, beta: beta, dKRows, ldc: dK.stride)
                    start += rows
                }
            }
        }
    }
}
