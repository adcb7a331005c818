/// Each of `rows` rows of x[rows, columns] replaced by its softmax — torch.softmax(dim=-1), with the row maximum
/// subtracted first.
func softmaxForward(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
    let data = UncheckedSendable(value: x)
    Parallel.forEach(rows, grain: max(1, 8192 / max(columns, 1))) { range in
        for row in range {
            let p = data.value + row * columns
            var maximum = -Float.infinity
            var i = 0
            if columns >= 8 {
                var m = Vector.load(p)
                i = 8
                while i + 8 <= columns {
                    m = pointwiseMax(m, Vector.load(p + i))
                    i += 8
                }
                maximum = m.max()
            }
            while i < columns {
                maximum = max(maximum, p[i])
                i += 1
            }
            let shift = Vector(repeating: maximum)
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
            let inverse = Vector(repeating: 1 / sum)
            vectorMap(p, p, columns) { $0 * inverse }
        }
    }
}

/// Strided views of q, k, v and the output: head h of token t of batch element b is the `headDimension` floats at
/// `base + (b·tokens + t)·stride + h·headDimension`, so fused projections ([q | k | v] per token) need no copy.
struct AttentionOperand {
    var base: UnsafePointer<Float>
    var stride: Int
}

/// out[B, Nq, H·D] = softmax(q·kᵀ · scale)·v for every batch element and head, over q[B, Nq, ·], k and v[B, Nk, ·]
/// (strided as `AttentionOperand`) — F.scaled_dot_product_attention on [B, H, N, D] views, as diffusers'
/// AttnProcessor2_0 calls it. Queries go in chunks that fill `scores` (`scoresCapacity` floats, at least Nk), so
/// memory stays bounded however many tokens there are.
func attentionForward(_ out: UnsafeMutablePointer<Float>, outStride: Int, _ q: AttentionOperand, _ k: AttentionOperand,
                      _ v: AttentionOperand, scores: UnsafeMutablePointer<Float>, scoresCapacity: Int, scale: Float,
                      batch: Int, queries: Int, keys: Int, heads: Int, headDimension: Int) {
    let chunk = max(1, min(queries, scoresCapacity / max(keys, 1)))
    for b in 0..<batch {
        for h in 0..<heads {
            let column = h * headDimension
            let keyBase = k.base + b * keys * k.stride + column, valueBase = v.base + b * keys * v.stride + column
            var start = 0
            while start < queries {
                let rows = min(chunk, queries - start)
                let query = q.base + (b * queries + start) * q.stride + column
                sgemm(transposeB: true, m: rows, n: keys, k: headDimension, alpha: scale, query, lda: q.stride, keyBase,
                      ldb: k.stride, beta: 0, scores, ldc: keys)
                softmaxForward(scores, rows: rows, columns: keys)
                sgemm(m: rows, n: headDimension, k: keys, scores, lda: keys, valueBase, ldb: v.stride, beta: 0,
                      out + (b * queries + start) * outStride + column, ldc: outStride)
                start += rows
            }
        }
    }
}
