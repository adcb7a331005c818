/// Geometry of a square-kernel 2-D convolution over [B, I, H, W] with zero padding `padding` before and
/// `paddingEnd` after each spatial dimension (diffusers' Downsample2D with padding 0 pads (0, 1, 0, 1) first).
struct ConvolutionShape: Equatable {
    var batch: Int, inChannels: Int, height: Int, width: Int
    var outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, paddingEnd: Int = 0

    var outHeight: Int { (height + padding + paddingEnd - kernel) / stride + 1 }
    var outWidth: Int { (width + padding + paddingEnd - kernel) / stride + 1 }
    /// A 1×1 stride-1 unpadded conv is a matrix product on the input as it is.
    var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 && paddingEnd == 0 }
    /// Floats of im2col scratch the conv needs (0 when pointwise).
    var columnsCount: Int { isPointwise ? 0 : inChannels * kernel * kernel * outHeight * outWidth }
}

/// columns[I·k·k, Ho·Wo] from one image input[I, H, W]: row (c, ky, kx) holds the input pixel each output position
/// sees through that kernel tap, or 0 in the padding.
func im2col(_ columns: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ shape: ConvolutionShape) {
    let (k, stride, pad) = (shape.kernel, shape.stride, shape.padding)
    let (height, width, outHeight, outWidth) = (shape.height, shape.width, shape.outHeight, shape.outWidth)
    let c = UncheckedSendable(value: columns), x = UncheckedSendable(value: input)
    Parallel.forEach(shape.inChannels, grain: max(1, 16384 / max(k * k * outHeight * outWidth, 1))) { channels in
        for channel in channels {
            let image = x.value + channel * height * width
            for ky in 0..<k {
                for kx in 0..<k {
                    let row = c.value + ((channel * k + ky) * k + kx) * outHeight * outWidth
                    // Output columns whose input column ox·stride - pad + kx lies inside the image.
                    let first = min(outWidth, max(0, -floorDivision(kx - pad, stride)))
                    let last = max(first, min(outWidth, floorDivision(width - 1 + pad - kx, stride) + 1))
                    for oy in 0..<outHeight {
                        let target = row + oy * outWidth
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
}

/// out[B, O, Ho, Wo] = conv2d(input[B, I, H, W], weight[O, I, k, k]) + bias (out += … with `accumulate`) —
/// torch.nn.functional.conv2d, by im2col and one sgemm per image. `bias` is [O], or [B, O] with `biasPerBatch`
/// (ResnetBlock2D's conv1 bias plus its projected time embedding, added in one pass). `columns` holds
/// `shape.columnsCount` floats of scratch.
func conv2dForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                   _ bias: UnsafePointer<Float>?, extraBias: UnsafePointer<Float>? = nil, accumulate: Bool = false,
                   columns: UnsafeMutablePointer<Float>?, _ shape: ConvolutionShape) {
    let outSpatial = shape.outHeight * shape.outWidth
    let inner = shape.inChannels * shape.kernel * shape.kernel
    for b in 0..<shape.batch {
        let target = out + b * shape.outChannels * outSpatial
        let image = input + b * shape.inChannels * shape.height * shape.width
        var beta: Float = accumulate ? 1 : 0
        if bias != nil || extraBias != nil {
            addChannelBias(target, bias, extraBias.map { $0 + b * shape.outChannels }, accumulate: accumulate,
                           channels: shape.outChannels, spatial: outSpatial)
            beta = 1
        }
        var matrix = image
        if !shape.isPointwise {
            im2col(columns!, image, shape)
            matrix = UnsafePointer(columns!)
        }
        sgemm(m: shape.outChannels, n: outSpatial, k: inner, weight, lda: inner, matrix, ldb: outSpatial, beta: beta, target, ldc: outSpatial)
    }
}

/// ⌊a / b⌋ for b > 0, also for negative a (Swift's `/` truncates toward zero).
@inline(__always) func floorDivision(_ a: Int, _ b: Int) -> Int {
    a >= 0 ? a / b : -((-a + b - 1) / b)
}
