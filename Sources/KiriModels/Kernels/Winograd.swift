import KiriKernels
import KiriTensor

/// 3×3 convolutions with stride 1 and padding 1 by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast
/// Algorithms for Convolutional Neural Networks", 2016): each 2×2 block of output ("tile") comes from the 4×4 input
/// patch around it as Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, so the products become 16 matrix products
/// M_ξ[O, tiles] = U_ξ[O, I] · V_ξ[I, tiles], with 2.25× fewer multiplications than im2col's. The transforms use
/// only ±1 and ½, so the result stays within float32 rounding of the direct sum.

/// Number of Winograd matrices: one per element of a 4×4 tile.
let winogradPoints = 16

/// Tiles of a batch: each image has `rows` × `columns` tiles (an odd side's last tile half outside). A pass covers
/// a range of tile rows, numbered b·rows + ty across the batch, and its tiles are numbered row by row from 0.
struct WinogradTiling {
    let batch: Int, height: Int, width: Int
    var rows: Int { (height + 1) / 2 }
    var columns: Int { (width + 1) / 2 }
    var tileRows: Int { batch * rows }
}

@inline(__always) private func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
    if count == 8 { v.store(p) } else { v.store(p, count: count) }
}

/// V[16, I, n] for the n tiles of tile rows `tileRows`: Bᵀ d B of each tile's 4×4 input patch d (zero outside the
/// image), with Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. Each input row is split into its
/// even and odd columns (shifted by the padding), so patch column j of eight neighbouring tiles is one contiguous
/// load; a tile row shares two input rows with the next, so the split rows are kept in four slots by row number
/// and each is made once. The two stages go through a small buffer so that few vectors are live at once. Channels
/// are split over the cores.
///
/// With `upsampled`, the image (tiling.height × tiling.width, both even) is input[.., H/2, W/2] up-sampled 2× by
/// nearest neighbour (F.interpolate, mode "nearest"), read without being made: row y is input row y/2, and its
/// columns 2k - 1 and 2k are input columns k - 1 and k, so the split rows are the input row itself, shifted. With
/// `normalization`, the image is the input as that map makes it (GroupNorm and its activation before the conv): the
/// input rows a channel of an image needs in this pass are mapped in one run into `mapped` (one call per run
/// rather than per row, which small images' short rows would pay for).
func winogradInputTransform(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ tiling: WinogradTiling,
                            inChannels: Int, tileRows: Range<Int>, upsampled: Bool = false,
                            normalization: ChannelNormalization? = nil) {
    let (height, width, rows, columns) = (tiling.height, tiling.width, tiling.rows, tiling.columns)
    let (sourceHeight, sourceWidth) = upsampled ? (height / 2, width / 2) : (height, width)
    let n = tileRows.count * columns, plane = inChannels * n
    // Room for full-vector loads past the last tile.
    let span = columns + 16
    // Source rows a pass reads of one image: two per tile row and two more.
    let mappedRows = normalization == nil ? 0 : min(sourceHeight, 2 * tileRows.count + 2)
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input)
    Parallel.forEach(inChannels, grain: max(1, 4096 / max(n, 1))) { channels in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16 * span + 128 + mappedRows * sourceWidth) { buffer in
            // The row each slot holds, as scalars in memory: a SIMD4 written one lane at a time stalled every reload.
            withUnsafeTemporaryAllocation(of: Int.self, capacity: 8) { slots in
                let held = slots.baseAddress!
                // Slot s holds an input row y with s = (y + 1) mod 8: columns 2k - 1 at split[2s], columns 2k at
                // split[2s + 1], for k = 0...columns; `held` says which row of which image each slot holds. A tile
                // row also splits the two rows the next one adds, so that the vector loads of a row come well
                // after the stores that made it (a load straight after them waits for them to reach the cache).
                let split = buffer.baseAddress!, stage = split + 16 * span, mapped = stage + 128
                split.update(repeating: 0, count: 16 * span)
                for channel in channels {
                    held.update(repeating: -1, count: 8)
                    // The image and source rows `mapped` holds.
                    var mappedImage = -1, mappedFirst = 0, mappedEnd = 0
                    for tileRow in tileRows {
                        let imageIndex = tileRow / rows, ty = tileRow % rows
                        let image = x.value + (imageIndex * inChannels + channel) * sourceHeight * sourceWidth
                        let lookahead = ty + 1 < rows && tileRow + 1 < tileRows.upperBound
                        for i in 0..<(lookahead ? 6 : 4) {
                            let y = 2 * ty - 1 + i, slot = (y + 1) & 7, even = split + 2 * slot * span, odd = even + span
                            let key = imageIndex * (height + 2) + y + 1
                            guard held[slot] != key else { continue }
                            held[slot] = key
                            guard y >= 0, y < height else {
                                even.update(repeating: 0, count: columns + 1)
                                odd.update(repeating: 0, count: columns + 1)
                                continue
                            }
                            let sourceRow = upsampled ? y / 2 : y
                            var line = image + sourceRow * sourceWidth
                            if let normalization {
                                if mappedImage != imageIndex || sourceRow < mappedFirst || sourceRow >= mappedEnd {
                                    // From this row to the last this pass reads of the image.
                                    let lastTileRow = min(tileRows.upperBound, (imageIndex + 1) * rows) - 1
                                    let lastRow = min(height - 1, 2 * (lastTileRow % rows) + 2)
                                    (mappedImage, mappedFirst) = (imageIndex, sourceRow)
                                    mappedEnd = min(sourceRow + mappedRows, (upsampled ? lastRow / 2 : lastRow) + 1)
                                    normalization.apply(mapped, line, (mappedEnd - mappedFirst) * sourceWidth, image: imageIndex,
                                                        channel: channel)
                                }
                                line = UnsafePointer(mapped + (sourceRow - mappedFirst) * sourceWidth)
                            }
                            if upsampled {
                                even[0] = 0
                                (even + 1).update(from: line, count: sourceWidth)
                                odd.update(from: line, count: sourceWidth)
                                odd[sourceWidth] = 0
                                continue
                            }
                            even[0] = 0
                            // Sixteen columns at a time, split in registers; the rest one by one.
                            var done = 0
                            while 2 * done + 16 <= width {
                                let pair = UnsafeRawPointer(line + 2 * done).loadUnaligned(as: SIMD16<Float>.self)
                                UnsafeMutableRawPointer(odd + done).storeBytes(of: pair.evenHalf, as: Vector.self)
                                UnsafeMutableRawPointer(even + done + 1).storeBytes(of: pair.oddHalf, as: Vector.self)
                                done += 8
                            }
                            for k in (done + 1)..<max(done + 1, (width + 1) / 2) { even[k] = line[2 * k - 1] }
                            for k in done..<max(done, width / 2) { odd[k] = line[2 * k] }
                            // The last pair: columns 2k - 1 and 2k with k = columns, partly past the right edge.
                            for k in (width + 1) / 2...columns { even[k] = 2 * k - 1 < width ? line[2 * k - 1] : 0 }
                            for k in width / 2...columns { odd[k] = 2 * k < width ? line[2 * k] : 0 }
                        }
                        // Patch row i of this tile row is input row 2ty - 1 + i, in slot (2ty + i) mod 8.
                        let row0 = split + 2 * (2 * ty & 7) * span, row1 = split + 2 * ((2 * ty + 1) & 7) * span
                        let row2 = split + 2 * ((2 * ty + 2) & 7) * span, row3 = split + 2 * ((2 * ty + 3) & 7) * span
                        let base = o.value + channel * n + (tileRow - tileRows.lowerBound) * columns
                        // Lanes past a row's last tile land on the next tile row's, which this thread writes next:
                        // a pass's last row (before other channels' tiles), or a spill longer than a row, is stored
                        // lane by lane.
                        let fullStores = tileRow + 1 < tileRows.upperBound
                        var tx = 0
                        while tx < columns {
                            let remaining = columns - tx
                            let count = remaining >= 8 || (fullStores && 8 - remaining <= columns) ? 8 : remaining
                            // Stage 1, column by column: t = Bᵀ d.
                            for j in 0..<4 {
                                let offset = tx + j / 2 + j % 2 * span
                                let d0 = Vector.load(row0 + offset), d1 = Vector.load(row1 + offset)
                                let d2 = Vector.load(row2 + offset), d3 = Vector.load(row3 + offset)
                                (d0 - d2).store(stage + 8 * j)
                                (d1 + d2).store(stage + 8 * (4 + j))
                                (d2 - d1).store(stage + 8 * (8 + j))
                                (d1 - d3).store(stage + 8 * (12 + j))
                            }
                            // Stage 2, row by row: v = t B.
                            for i in 0..<4 {
                                let t0 = Vector.load(stage + 8 * (4 * i)), t1 = Vector.load(stage + 8 * (4 * i + 1))
                                let t2 = Vector.load(stage + 8 * (4 * i + 2)), t3 = Vector.load(stage + 8 * (4 * i + 3))
                                let target = base + tx + 4 * i * plane
                                store(t0 - t2, target, count)
                                store(t1 + t2, target + plane, count)
                                store(t2 - t1, target + 2 * plane, count)
                                store(t1 - t3, target + 3 * plane, count)
                            }
                            tx += 8
                        }
                    }
                }
            }
        }
    }
}

/// out[B, O, H, W] (+)= Aᵀ m A + bias[O] + extraBias[B, O] for output channels `channels` (of `outChannels`) and
/// the tiles of tile rows `tileRows`, m gathered from M[16, channels, n] (which has 8 floats of slack at its end),
/// with Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]; the halves of edge tiles beyond an odd side are dropped. Eight
/// neighbouring tiles at a time; output channels are split over the cores.
func winogradOutputTransform(_ out: UnsafeMutablePointer<Float>, _ products: UnsafePointer<Float>, _ tiling: WinogradTiling,
                             channels outputs: Range<Int>, outChannels: Int, tileRows: Range<Int>, bias: UnsafePointer<Float>?,
                             extraBias: UnsafePointer<Float>?, accumulate: Bool) {
    let (height, width, rows, columns) = (tiling.height, tiling.width, tiling.rows, tiling.columns)
    let n = tileRows.count * columns, plane = outputs.count * n
    let o = UncheckedSendable(value: out), m = UncheckedSendable(value: products)
    let b = UncheckedSendable(value: bias), e = UncheckedSendable(value: extraBias)
    Parallel.forEach(outputs.count, grain: max(1, 4096 / max(n, 1))) { indices in
        let channels = outputs.lowerBound + indices.lowerBound..<outputs.lowerBound + indices.upperBound
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 64) { buffer in
            let stage = buffer.baseAddress!
            for channel in channels {
                for tileRow in tileRows {
                    let image = tileRow / rows, ty = tileRow % rows
                    let offset = Vector(repeating: (b.value?[channel] ?? 0) + (e.value?[image * outChannels + channel] ?? 0))
                    let target = o.value + (image * outChannels + channel) * height * width + 2 * ty * width
                    let base = m.value + (channel - outputs.lowerBound) * n + (tileRow - tileRows.lowerBound) * columns
                    var tx = 0
                    while tx < columns {
                        let count = min(8, columns - tx)
                        // Stage 1, column by column: s = Aᵀ m.
                        for j in 0..<4 {
                            let p = base + tx + j * plane
                            let m0 = Vector.load(p), m1 = Vector.load(p + 4 * plane), m2 = Vector.load(p + 8 * plane),
                                m3 = Vector.load(p + 12 * plane)
                            (m0 + m1 + m2).store(stage + 8 * j)
                            (m1 - m2 - m3).store(stage + 8 * (4 + j))
                        }
                        // Stage 2, row by row: y = s A, interleaved into the two output rows of the tiles.
                        for i in 0..<2 where 2 * ty + i < height {
                            let s0 = Vector.load(stage + 8 * (4 * i)), s1 = Vector.load(stage + 8 * (4 * i + 1))
                            let s2 = Vector.load(stage + 8 * (4 * i + 2)), s3 = Vector.load(stage + 8 * (4 * i + 3))
                            let left = s0 + s1 + s2 + offset, right = s1 - s2 - s3 + offset
                            let line = target + i * width + 2 * tx
                            let pairs = min(count, (width - 2 * tx) / 2)
                            if pairs == 8 {
                                var interleaved = SIMD16<Float>()
                                (interleaved.evenHalf, interleaved.oddHalf) = (left, right)
                                let raw = UnsafeMutableRawPointer(line)
                                if accumulate { interleaved += raw.loadUnaligned(as: SIMD16<Float>.self) }
                                raw.storeBytes(of: interleaved, as: SIMD16<Float>.self)
                            } else if accumulate {
                                for lane in 0..<pairs {
                                    line[2 * lane] += left[lane]
                                    line[2 * lane + 1] += right[lane]
                                }
                                if pairs < count { line[2 * pairs] += left[pairs] }
                            } else {
                                for lane in 0..<pairs {
                                    line[2 * lane] = left[lane]
                                    line[2 * lane + 1] = right[lane]
                                }
                                if pairs < count { line[2 * pairs] = left[pairs] }
                            }
                        }
                        tx += 8
                    }
                }
            }
        }
    }
}

/// Tile rows per pass, so that V and M (16 floats per tile per channel) stay within 16 MiB each.
func winogradTileRowsPerPass(inChannels: Int, outChannels: Int, tiling: WinogradTiling) -> Int {
    max(1, min(tiling.tileRows, (1 << 22) / (winogradPoints * max(inChannels, outChannels) * tiling.columns)))
}

/// A 3×3 conv's weight [O, I·9] for Winograd. Float32 weights keep their transforms U[16, O, I] (16/9 of the
/// weight, made once: float32 was chosen for speed over memory, and making U per call costs a small image's forward
/// 20%); weights stored as f16, bf16 or q8_0 make them per call, a chunk of output channels at a time, so that no
/// float32 copy of the model exists (at SD's sizes that costs 2–3% of a step).
struct WinogradWeight {
    let chunks: WeightChunks
    /// U[16, O, I], kept for float32 weights.
    let filters: Tensor?

    /// `chunkRows` overrides the chunk size of stored weights (tests use it to make several chunks). `storage`, a
    /// tensor of U's shape, is filled instead of a new one (a trainable conv's weight changes every step, and new
    /// storage per call would be page faults).
    init(_ weight: WeightMatrix, chunkRows: Int? = nil, storage: Tensor? = nil) throws {
        let inChannels = weight.columns / 9
        guard let floats = weight.floats else {
            (chunks, filters) = (WeightChunks(weight, rowFloats: winogradPoints * inChannels, rows: chunkRows), nil)
            return
        }
        let filters = try storage ?? Tensor(shape: [winogradPoints, weight.rows, inChannels])
        let (u, g, plane) = (UncheckedSendable(value: filters.data), UncheckedSendable(value: floats), weight.rows * inChannels)
        Parallel.forEach(plane, grain: 1 << 12) { range in
            kiri_winograd_filters(u.value + range.lowerBound, plane, g.value + 9 * range.lowerBound, KIRI_F32, range.count)
        }
        (chunks, self.filters) = (WeightChunks(weight), filters)
    }

    /// Floats of scratch `winogradConv2dForward` needs: V[16, I, n] and M[16, rows, n] for a pass of n tiles and a
    /// chunk of rows, 8 more for the output transform's full-vector loads at the end of M, then U[16, rows, I] when
    /// it is made per call.
    func scratchCount(_ tiling: WinogradTiling, tileRowsPerPass: Int? = nil) -> Int {
        let (inChannels, rows) = (chunks.weight.columns / 9, chunks.rows)
        let passRows = tileRowsPerPass ?? winogradTileRowsPerPass(inChannels: inChannels, outChannels: rows, tiling: tiling)
        let made = filters == nil ? winogradPoints * rows * inChannels : 0
        return winogradPoints * (inChannels + rows) * tiling.columns * passRows + 8 + made
    }
}

/// out[B, O, H, W] = conv2d(input[B, I, H, W], weight[O, I, 3, 3], padding=1) + bias[O] + extraBias[B, O] (out += …
/// with `accumulate`) — torch.nn.functional.conv2d for a 3×3 kernel, stride 1, padding 1. For each chunk of output
/// channels, the filters' transforms U[16, rows, I] are the kept ones or made from the stored weights
/// (WinogradWeight, kiri_winograd_filters on every core), then each pass of tiles is transformed, its 16 products
/// shared out between the cores, each a one-thread sgemm, and transformed back (when one pass holds every tile,
/// the input is transformed once for all the chunks). A stopped run skips the passes left. With `upsampled`, the
/// conv reads input[B, I, H/2, W/2] up-sampled 2× by nearest neighbour without making the up-sampled image
/// (Upsample2D); with `normalization`, it reads the input as that map makes it (GroupNorm and its activation)
/// without making the normalised input. `tileRowsPerPass` overrides the pass size (tests use it to make several
/// passes).
func winogradConv2dForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ filters: WinogradWeight,
                           _ bias: UnsafePointer<Float>?, extraBias: UnsafePointer<Float>? = nil, accumulate: Bool = false,
                           scratch: UnsafeMutablePointer<Float>, tileRowsPerPass: Int? = nil, batch: Int, height: Int, width: Int,
                           upsampled: Bool = false, normalization: ChannelNormalization? = nil) {
    let weight = filters.chunks, matrix = weight.weight
    let (inChannels, outChannels) = (matrix.columns / 9, matrix.rows)
    let tiling = WinogradTiling(batch: batch, height: height, width: width)
    let perPass = tileRowsPerPass ?? winogradTileRowsPerPass(inChannels: inChannels, outChannels: weight.rows, tiling: tiling)
    let transformed = scratch, products = scratch + winogradPoints * inChannels * perPass * tiling.columns
    let made = products + winogradPoints * weight.rows * perPass * tiling.columns + 8
    let v = UncheckedSendable(value: transformed), m = UncheckedSendable(value: products)
    let u = UncheckedSendable(value: filters.filters?.data ?? made)
    let cancellation = Cancellation.current
    func transformInput(_ tileRows: Range<Int>) {
        winogradInputTransform(transformed, input, tiling, inChannels: inChannels, tileRows: tileRows, upsampled: upsampled,
                               normalization: normalization)
    }
    let onePass = perPass >= tiling.tileRows
    if onePass { transformInput(0..<tiling.tileRows) }
    for chunk in 0..<weight.count where !(cancellation?.isStopped ?? false) {
        let channels = weight.range(chunk), plane = weight.range(chunk).count * inChannels
        if filters.filters == nil {
            Parallel.forEach(channels.count, grain: max(1, 4096 / inChannels)) { rows in
                kiri_winograd_filters(u.value + rows.lowerBound * inChannels, plane,
                                      matrix.bytes(row: channels.lowerBound + rows.lowerBound), matrix.format.kernelType,
                                      rows.count * inChannels)
            }
        }
        var first = 0
        while first < tiling.tileRows, !(cancellation?.isStopped ?? false) {
            let tileRows = first..<min(tiling.tileRows, first + perPass), n = tileRows.count * tiling.columns
            if !onePass { transformInput(tileRows) }
            let flops = 2 * winogradPoints * channels.count * inChannels * n
            Parallel.split(winogradPoints, pieces: Parallel.pieces(flops: flops)) { points in
                for point in points {
                    sgemm(m: channels.count, n: n, k: inChannels, u.value + point * plane, lda: inChannels,
                          v.value + point * inChannels * n, ldb: n, beta: 0, m.value + point * channels.count * n, ldc: n)
                }
            }
            winogradOutputTransform(out, products, tiling, channels: channels, outChannels: outChannels, tileRows: tileRows,
                                    bias: bias, extraBias: extraBias, accumulate: accumulate)
            first += tileRows.count
        }
    }
}

/// D[16, O, n] for the n tiles of tile rows `tileRows`: A y Aᵀ of each tile's 2×2 block y of dOut[B, O, H, W] (zero
/// past an odd side), with A = [[1, 0], [1, 1], [1, -1], [0, -1]]: the gradient taken back through the output
/// transform Y = Aᵀ M A. Eight neighbouring tiles at a time where their sixteen columns are all inside the image;
/// output channels are split over the cores.
func winogradOutputGradientTransform(_ out: UnsafeMutablePointer<Float>, _ dOut: UnsafePointer<Float>, _ tiling: WinogradTiling,
                                     channels: Int, tileRows: Range<Int>) {
    let (height, width, rows, columns) = (tiling.height, tiling.width, tiling.rows, tiling.columns)
    let n = tileRows.count * columns, plane = channels * n
    let o = UncheckedSendable(value: out), d = UncheckedSendable(value: dOut)
    // D's row i from row i of r = A y, (a, b): a, a + b, a − b, −b; r's rows are y0, y0 + y1, y0 − y1, −y1.
    @inline(__always) func store<V: SIMD>(_ y00: V, _ y01: V, _ y10: V, _ y11: V, _ target: UnsafeMutablePointer<Float>,
                                          _ write: (V, UnsafeMutablePointer<Float>) -> Void) where V.Scalar == Float {
        @inline(__always) func row(_ i: Int, _ a: V, _ b: V) {
            let row = target + 4 * i * plane
            write(a, row)
            write(a + b, row + plane)
            write(a - b, row + 2 * plane)
            write(V() - b, row + 3 * plane)
        }
        row(0, y00, y01)
        row(1, y00 + y10, y01 + y11)
        row(2, y00 - y10, y01 - y11)
        row(3, V() - y10, V() - y11)
    }
    Parallel.forEach(channels, grain: max(1, 4096 / max(n, 1))) { range in
        for channel in range {
            for tileRow in tileRows {
                let image = tileRow / rows, ty = tileRow % rows
                let top = d.value + (image * channels + channel) * height * width + 2 * ty * width
                let bottom = 2 * ty + 1 < height ? top + width : nil
                let base = o.value + channel * n + (tileRow - tileRows.lowerBound) * columns
                var tx = 0
                while 2 * tx + 16 <= width {
                    let upper = UnsafeRawPointer(top + 2 * tx).loadUnaligned(as: SIMD16<Float>.self)
                    let lower = bottom.map { UnsafeRawPointer($0 + 2 * tx).loadUnaligned(as: SIMD16<Float>.self) } ?? SIMD16()
                    store(upper.evenHalf, upper.oddHalf, lower.evenHalf, lower.oddHalf, base + tx) { $0.store($1) }
                    tx += 8
                }
                for tx in tx..<columns {
                    let right = 2 * tx + 1 < width
                    let y00 = top[2 * tx], y01 = right ? top[2 * tx + 1] : 0
                    let y10 = bottom?[2 * tx] ?? 0, y11 = right ? bottom?[2 * tx + 1] ?? 0 : 0
                    store(SIMD2(y00, 0), SIMD2(y01, 0), SIMD2(y10, 0), SIMD2(y11, 0), base + tx) { $1.pointee = $0[0] }
                }
            }
        }
    }
}

/// Floats of scratch `winogradConv2dWeightBackward` needs: V[16, I, n] and D[16, O, n] for a pass of n tiles, and
/// dU[16, O, I].
func winogradWeightBackwardScratch(inChannels: Int, outChannels: Int, _ tiling: WinogradTiling, tileRowsPerPass: Int? = nil) -> Int {
    let passRows = tileRowsPerPass ?? winogradTileRowsPerPass(inChannels: inChannels, outChannels: outChannels, tiling: tiling)
    return winogradPoints * ((inChannels + outChannels) * tiling.columns * passRows + outChannels * inChannels)
}

/// dWeight[O, I, 3, 3] += the weight gradient of winogradConv2dForward (torch.nn.grad.conv2d_weight for a 3×3 kernel,
/// stride 1, padding 1), and dBias[O] += Σ dOut, by F(2×2, 3×3) run backwards: with U = G g Gᵀ and Y = Aᵀ(U ⊙ V)A per
/// tile, ∂L/∂U summed over the tiles is 16 products dU_ξ[O, I] = D_ξ[O, tiles] · V_ξ[I, tiles]ᵀ (D = A dY Aᵀ, V the
/// forward's input transform), and dW = Gᵀ dU G, with G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]. 2.25× fewer
/// multiplications than im2col's dOut · columnsᵀ (conv2dBackward, the reference) and no columns. Each product is one
/// core's whole, so the bits do not depend on the thread count. `scratch` holds `winogradWeightBackwardScratch`
/// floats; `tileRowsPerPass` overrides the pass size (tests use it to make several passes).
func winogradConv2dWeightBackward(_ dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?, dOut: UnsafePointer<Float>,
                                  input: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>, tileRowsPerPass: Int? = nil,
                                  batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int) {
    let tiling = WinogradTiling(batch: batch, height: height, width: width)
    let perPass = tileRowsPerPass ?? winogradTileRowsPerPass(inChannels: inChannels, outChannels: outChannels, tiling: tiling)
    let transformed = scratch, gradients = scratch + winogradPoints * inChannels * perPass * tiling.columns
    let products = gradients + winogradPoints * outChannels * perPass * tiling.columns, plane = outChannels * inChannels
    products.update(repeating: 0, count: winogradPoints * plane)
    let v = UncheckedSendable(value: transformed), dy = UncheckedSendable(value: gradients), du = UncheckedSendable(value: products)
    var first = 0
    while first < tiling.tileRows {
        let tileRows = first..<min(tiling.tileRows, first + perPass), n = tileRows.count * tiling.columns
        winogradInputTransform(transformed, input, tiling, inChannels: inChannels, tileRows: tileRows)
        winogradOutputGradientTransform(gradients, dOut, tiling, channels: outChannels, tileRows: tileRows)
        Parallel.split(winogradPoints, pieces: Parallel.pieces(flops: 2 * winogradPoints * plane * n)) { points in
            for point in points {
                sgemm(transposeB: true, m: outChannels, n: inChannels, k: n, dy.value + point * outChannels * n, lda: n,
                      v.value + point * inChannels * n, ldb: n, beta: 1, du.value + point * plane, ldc: inChannels)
            }
        }
        first += tileRows.count
    }
    let w = UncheckedSendable(value: dWeight)
    Parallel.forEach(plane, grain: 1 << 10) { filters in
        for f in filters {
            @inline(__always) func row(_ i: Int) -> SIMD4<Float> {
                let p = du.value + 4 * i * plane + f
                return SIMD4(p[0], p[plane], p[2 * plane], p[3 * plane])
            }
            // s = Gᵀ dU, the rows as vectors, then dW = s G, row by row.
            let (x0, x1, x2, x3) = (row(0), row(1), row(2), row(3))
            let target = w.value + 9 * f
            @inline(__always) func add(_ i: Int, _ s: SIMD4<Float>) {
                target[3 * i] += s[0] + 0.5 * (s[1] + s[2])
                target[3 * i + 1] += 0.5 * (s[1] - s[2])
                target[3 * i + 2] += 0.5 * (s[1] + s[2]) + s[3]
            }
            add(0, x0 + 0.5 * (x1 + x2))
            add(1, 0.5 * (x1 - x2))
            add(2, 0.5 * (x1 + x2) + x3)
        }
    }
    if let dBias {
        let b = UncheckedSendable(value: dBias), spatial = height * width
        Parallel.forEach(outChannels, grain: max(1, 1 << 16 / max(batch * spatial, 1))) { channels in
            for o in channels {
                var total: Float = 0
                for image in 0..<batch {
                    let plane = dOut + (image * outChannels + o) * spatial
                    for i in 0..<spatial { total += plane[i] }
                }
                b.value[o] += total
            }
        }
    }
}
