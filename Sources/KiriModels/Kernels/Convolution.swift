import KiriTensor

/// Geometry of a square-kernel 2-D convolution over [B, I, H, W] with zero padding `padding` before and
/// `paddingEnd` after each spatial dimension (diffusers' Downsample2D with padding 0 pads (0, 1, 0, 1) first).
struct ConvolutionShape: Equatable {
    var batch: Int, inChannels: Int, height: Int, width: Int
    var outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, paddingEnd: Int = 0

    var outHeight: Int { (height + padding + paddingEnd - kernel) / stride + 1 }
    var outWidth: Int { (width + padding + paddingEnd - kernel) / stride + 1 }
    /// A 1×1 stride-1 unpadded conv is a matrix product on the input as it is.
    var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 && paddingEnd == 0 }
}

/// columns[I·k·k, rows·Wo] from one image input[I, H, W], for output rows `rows`: row (c, ky, kx) holds the
/// input pixel each of those output positions sees through that kernel tap, or 0 in the padding. `rowStride`
/// (default rows·Wo) places the rows further apart, for several images' columns side by side.
func im2col(_ columns: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ shape: ConvolutionShape, rows: Range<Int>,
            rowStride: Int? = nil) {
    let (k, stride, pad) = (shape.kernel, shape.stride, shape.padding)
    let (height, width, outWidth) = (shape.height, shape.width, shape.outWidth)
    let length = rowStride ?? rows.count * outWidth
    for channel in 0..<shape.inChannels {
        let image = input + channel * height * width
        for ky in 0..<k {
            for kx in 0..<k {
                let row = columns + ((channel * k + ky) * k + kx) * length
                // Output columns whose input column ox·stride - pad + kx lies inside the image.
                let first = min(outWidth, max(0, -floorDivision(kx - pad, stride)))
                let last = max(first, min(outWidth, floorDivision(width - 1 + pad - kx, stride) + 1))
                for oy in rows {
                    let target = row + (oy - rows.lowerBound) * outWidth
                    let iy = oy * stride - pad + ky
                    guard iy >= 0, iy < height else {
                        target.update(repeating: 0, count: outWidth)
                        continue
                    }
                    let source = image + iy * width - pad + kx
                    target.update(repeating: 0, count: first)
                    if stride == 1 {
                        (target + first).update(from: source + first, count: last - first)
                    } else {
                        for ox in first..<last { target[ox] = source[ox * stride] }
                    }
                    (target + last).update(repeating: 0, count: outWidth - last)
                }
            }
        }
    }
}

/// Floats of im2col scratch each thread may use: 16 MiB, so a large image's columns go in bands of output rows.
let convolutionColumnsPerThread = 1 << 22

/// How `conv2dForward` splits its work: the B·Ho output rows in one contiguous range per thread, each range done in
/// bands of at most `bandRows` rows of one image.
struct ConvolutionPlan {
    let shape: ConvolutionShape
    let threads: Int
    let bandRows: Int

    /// `threads` and `bandRows` override the choice (tests use them to exercise the splits on small images). A
    /// run that can be stopped checks between bands, so its bands are at most `Parallel.stoppableFlops`.
    init(_ shape: ConvolutionShape, threads: Int? = nil, bandRows: Int? = nil) {
        self.shape = shape
        let rows = shape.batch * shape.outHeight
        let rowColumns = shape.inChannels * shape.kernel * shape.kernel * shape.outWidth
        let rowFlops = 2 * shape.outChannels * rowColumns
        self.threads = max(1, min(threads ?? Parallel.threads(flops: rowFlops * rows), rows))
        var band = bandRows ?? (shape.isPointwise ? shape.outHeight : convolutionColumnsPerThread / max(rowColumns, 1))
        if bandRows == nil, Cancellation.current != nil { band = min(band, Parallel.stoppableFlops / max(rowFlops, 1)) }
        self.bandRows = max(1, min(shape.outHeight, band))
    }

    /// Scratch floats: each thread's im2col columns, then the weight's widened chunk.
    func columnsCount(_ weight: WeightChunks) -> Int {
        let columns = shape.isPointwise ? 0 : shape.inChannels * shape.kernel * shape.kernel * bandRows * shape.outWidth
        return threads * columns + weight.scratchCount
    }
}

/// out[B, O, Ho, Wo] = conv2d(input[B, I, H, W], weight[O, I, k, k]) + bias[O] + extraBias[B, O] (out += … with
/// `accumulate`) — torch.nn.functional.conv2d, by im2col and sgemm on bands of output rows, one thread per range
/// of rows (OpenBLAS itself on one thread), stopping between bands once the run is; for each chunk of the weight
/// [O, I·k·k] in turn. `extraBias` carries ResnetBlock2D's projected time embedding, added with the bias in one
/// pass. `columns` holds `plan.columnsCount(weight)` floats of scratch.
func conv2dForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: WeightChunks,
                   _ bias: UnsafePointer<Float>?, extraBias: UnsafePointer<Float>? = nil, accumulate: Bool = false,
                   columns: UnsafeMutablePointer<Float>?, _ plan: ConvolutionPlan) {
    let shape = plan.shape
    let (outHeight, outWidth, outSpatial) = (shape.outHeight, shape.outWidth, shape.outHeight * shape.outWidth)
    let inner = shape.inChannels * shape.kernel * shape.kernel
    let perThread = shape.isPointwise ? 0 : inner * plan.bandRows * outWidth
    let totalRows = shape.batch * outHeight
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input)
    let b = UncheckedSendable(value: bias), e = UncheckedSendable(value: extraBias), c = UncheckedSendable(value: columns)
    let cancellation = Cancellation.current
    weight.forEach(scratch: columns.map { $0 + plan.threads * perThread }) { chunk, floats in
        let w = UncheckedSendable(value: floats)
        Parallel.split(plan.threads, pieces: plan.threads) { threads in
            for thread in threads {
                let scratch = c.value.map { $0 + thread * perThread }
                var row = totalRows * thread / plan.threads
                let end = totalRows * (thread + 1) / plan.threads
                while row < end, !(cancellation?.isStopped ?? false) {
                    let image = row / outHeight, first = row % outHeight
                    let rows = first..<min(outHeight, first + plan.bandRows, first + end - row)
                    let target = o.value + (image * shape.outChannels + chunk.lowerBound) * outSpatial + first * outWidth
                    let length = rows.count * outWidth
                    var beta: Float = accumulate ? 1 : 0
                    if b.value != nil || e.value != nil {
                        for channel in chunk {
                            let value = (b.value?[channel] ?? 0) + (e.value?[image * shape.outChannels + channel] ?? 0)
                            let line = target + (channel - chunk.lowerBound) * outSpatial
                            if accumulate {
                                for i in 0..<length { line[i] += value }
                            } else {
                                line.update(repeating: value, count: length)
                            }
                        }
                        beta = 1
                    }
                    let source = x.value + image * shape.inChannels * shape.height * shape.width
                    if shape.isPointwise {
                        sgemm(m: chunk.count, n: length, k: inner, w.value, lda: inner, source + first * outWidth,
                              ldb: outSpatial, beta: beta, target, ldc: outSpatial)
                    } else {
                        im2col(scratch!, source, shape, rows: rows)
                        sgemm(m: chunk.count, n: length, k: inner, w.value, lda: inner, scratch!, ldb: length, beta: beta,
                              target, ldc: outSpatial)
                    }
                    row += rows.count
                }
            }
        }
    }
}

/// ⌊a / b⌋ for b > 0, also for negative a (Swift's `/` truncates toward zero).
@inline(__always) func floorDivision(_ a: Int, _ b: Int) -> Int {
    a >= 0 ? a / b : -((-a + b - 1) / b)
}

/// dInput[I, H, W] += the gradients columns[I·k·k, Ho·Wo] hold for each input pixel an im2col over all output rows
/// read: im2col's adjoint (torch's col2im), for the input gradient of a convolution. Each output row adds a run of
/// columns to a run of one input row, found once, so the inner loop has no test.
func col2im(_ dInput: UnsafeMutablePointer<Float>, _ columns: UnsafePointer<Float>, _ shape: ConvolutionShape) {
    let (k, stride, pad) = (shape.kernel, shape.stride, shape.padding)
    let (height, width, outHeight, outWidth) = (shape.height, shape.width, shape.outHeight, shape.outWidth)
    for channel in 0..<shape.inChannels {
        let image = dInput + channel * height * width
        for ky in 0..<k {
            for kx in 0..<k {
                let row = columns + ((channel * k + ky) * k + kx) * outHeight * outWidth
                // Output columns ox whose input column ox·stride − pad + kx lies in 0..<width.
                let first = max(0, -floorDivision(kx - pad, stride))
                let last = min(outWidth - 1, floorDivision(width - 1 + pad - kx, stride))
                guard first <= last else { continue }
                for oy in 0..<outHeight {
                    let iy = oy * stride - pad + ky
                    guard iy >= 0, iy < height else { continue }
                    let target = image + iy * width + first * stride - pad + kx, source = row + oy * outWidth + first
                    if stride == 1 {
                        for i in 0...(last - first) { target[i] += source[i] }
                    } else {
                        for i in 0...(last - first) { target[i * stride] += source[i] }
                    }
                }
            }
        }
    }
}

/// Images whose positions conv2dBackward puts side by side in one product for dWeight: enough for about 512, so that
/// a small feature map's product is not a thin one.
func conv2dBackwardGroup(_ shape: ConvolutionShape) -> Int { max(1, 512 / max(shape.outHeight * shape.outWidth, 1)) }

/// Scratch floats conv2dBackward needs on `threads` threads: each thread's im2col columns of a group of images
/// [I·k·k, G·Ho·Wo], the group's dOut side by side [O, G·Ho·Wo], and its share of dWeight and dBias.
func conv2dBackwardScratch(_ shape: ConvolutionShape, threads: Int) -> Int {
    let taps = shape.inChannels * shape.kernel * shape.kernel, span = conv2dBackwardGroup(shape) * shape.outHeight * shape.outWidth
    return threads * ((taps + shape.outChannels) * span + shape.outChannels * (taps + 1))
}

/// The gradients of conv2dForward (torch.nn.functional.conv2d's backward) for a float32 weight[O, I·k·k]:
/// dWeight += dOut[O, Ho·Wo] · columnsᵀ and dBias[O] += Σ dOut (accumulated, as parameter gradients are), a group of
/// images at a time (conv2dBackwardGroup) with their positions side by side; and dInput[B, I, H, W] =
/// col2im(weightᵀ · dOut) image by image (nil: not wanted). The images are split over `threads` threads in
/// contiguous ranges; each but the first sums its dWeight and dBias apart, and those sums are added in thread
/// order, so the same thread count gives the same bits. `scratch` holds `conv2dBackwardScratch` floats.
func conv2dBackward(dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
                    dOut: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                    _ shape: ConvolutionShape, scratch: UnsafeMutablePointer<Float>, threads: Int) {
    let taps = shape.inChannels * shape.kernel * shape.kernel, positions = shape.outHeight * shape.outWidth
    let imageSize = shape.inChannels * shape.height * shape.width, outChannels = shape.outChannels
    let threads = max(1, min(threads, shape.batch)), group = conv2dBackwardGroup(shape)
    let span = group * positions, perThread = (taps + outChannels) * span + outChannels * (taps + 1)
    let pointers = UncheckedSendable(value: (dInput, dWeight, dBias, dOut, input, weight, scratch))
    Parallel.split(threads, pieces: threads) { pieces in
        let (dInput, dWeight, dBias, dOut, input, weight, scratch) = pointers.value
        for thread in pieces {
            let columns = scratch + thread * perThread, gradients = columns + taps * span
            let sums = gradients + outChannels * span
            // The first thread adds to the gradients themselves; the others to their own sums, zeroed first.
            let (weightSum, biasSum) = thread == 0 ? (dWeight, dBias) : (sums, sums + outChannels * taps)
            if thread > 0 { sums.update(repeating: 0, count: outChannels * (taps + 1)) }
            var image = shape.batch * thread / threads
            let end = shape.batch * (thread + 1) / threads
            while image < end {
                let count = min(group, end - image), width = count * positions
                for g in 0..<count {
                    im2col(columns + g * positions, input + (image + g) * imageSize, shape, rows: 0..<shape.outHeight, rowStride: width)
                    for o in 0..<outChannels {
                        (gradients + o * width + g * positions).update(from: dOut + ((image + g) * outChannels + o) * positions,
                                                                       count: positions)
                    }
                }
                sgemm(transposeB: true, m: outChannels, n: taps, k: width, gradients, lda: width, columns, ldb: width, beta: 1,
                      weightSum, ldc: taps)
                if let biasSum {
                    for o in 0..<outChannels {
                        var total: Float = 0
                        for p in 0..<width { total += gradients[o * width + p] }
                        biasSum[o] += total
                    }
                }
                if let dInput {
                    for g in 0..<count {
                        sgemm(transposeA: true, m: taps, n: positions, k: outChannels, weight, lda: taps,
                              dOut + (image + g) * outChannels * positions, ldb: positions, beta: 0, columns, ldc: positions)
                        let target = dInput + (image + g) * imageSize
                        target.update(repeating: 0, count: imageSize)
                        col2im(target, columns, shape)
                    }
                }
                image += count
            }
        }
    }
    for thread in 1..<threads {
        let sums = scratch + thread * perThread + (taps + outChannels) * span
        for i in 0..<outChannels * taps { dWeight[i] += sums[i] }
        if let dBias {
            for o in 0..<outChannels { dBias[o] += sums[outChannels * taps + o] }
        }
    }
}
