import KiriTensor

// Group and layer normalisation. Statistics are summed in float32 vectors over blocks of 256 elements and the
// blocks in Double, so a 2-million-element group loses no more than a 256-element one; the variance is the biased
// one over (x - mean)², as torch's.

/// Σ p[0..<count].
@inline(__always) private func sum(_ p: UnsafePointer<Float>, _ count: Int) -> Double {
    var total = 0.0, i = 0
    while i < count {
        let end = min(count, i + 256)
        var a = Vector(), b = Vector()
        while i + 16 <= end {
            a += Vector.load(p + i)
            b += Vector.load(p + i + 8)
            i += 16
        }
        while i + 8 <= end {
            a += Vector.load(p + i)
            i += 8
        }
        var block = (a + b).sum()
        while i < end {
            block += p[i]
            i += 1
        }
        total += Double(block)
    }
    return total
}

/// Σ (p[i] - mean)².
@inline(__always) private func sumOfSquares(_ p: UnsafePointer<Float>, _ count: Int, mean: Float) -> Double {
    var total = 0.0, i = 0
    let m = Vector(repeating: mean)
    while i < count {
        let end = min(count, i + 256)
        var a = Vector(), b = Vector()
        while i + 16 <= end {
            let d = Vector.load(p + i) - m, e = Vector.load(p + i + 8) - m
            a += d * d
            b += e * e
            i += 16
        }
        while i + 8 <= end {
            let d = Vector.load(p + i) - m
            a += d * d
            i += 8
        }
        var block = (a + b).sum()
        while i < end {
            let d = p[i] - mean
            block += d * d
            i += 1
        }
        total += Double(block)
    }
    return total
}

/// (mean, 1/√(variance + eps)) of `count` elements.
@inline(__always) private func moments(_ p: UnsafePointer<Float>, _ count: Int, eps: Float) -> (mean: Float, inverseDeviation: Float) {
    let mean = sum(p, count) / Double(count)
    let variance = sumOfSquares(p, count, mean: Float(mean)) / Double(count)
    return (Float(mean), Float(1 / (variance + Double(eps)).squareRoot()))
}

/// out[i] = activation((x[i] - mean) · scale + shift) over `count` elements. Subtracting the mean first (torch
/// folds it into the shift) keeps the digits of a group whose mean is large against its spread.
@inline(__always) private func normalize(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ count: Int, mean: Float,
                                         scale: Float, shift: Float, _ activation: Activation?) {
    let m = Vector(repeating: mean), s = Vector(repeating: scale), t = Vector(repeating: shift)
    activationMap(out, x, count, activation) { ($0 - m) * s + t }
}

/// GroupNorm's map of one channel of one image, activation((x - mean) · scale + shift), with mean and scale [B, C]
/// (each channel has its group's mean, and its weight over the group's deviation) and shift [C] (the bias): a
/// kernel that reads x applies it to what it reads (a Winograd conv's input transform), so that the normalised
/// copy of x need not exist. Applied by every path alike, it gives the same bits. Kernels share it between threads
/// that only read what it points at.
struct ChannelNormalization: @unchecked Sendable {
    let mean: UnsafePointer<Float>, scale: UnsafePointer<Float>, shift: UnsafePointer<Float>
    let channels: Int
    let activation: Activation?

    /// out[count] = the map of channel `channel` of image `image` over x[count].
    @inline(__always) func apply(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ count: Int, image: Int, channel: Int) {
        let item = image * channels + channel
        normalize(out, x, count, mean: mean[item], scale: scale[item], shift: shift[channel], activation)
    }
}

/// mean[B, C] and scale[B, C] of GroupNorm(groups, C, eps) with affine weight[C] over input[B, C, S]: the
/// statistics of ChannelNormalization.
func groupNormStatistics(mean: UnsafeMutablePointer<Float>, scale: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>,
                         _ weight: UnsafePointer<Float>, eps: Float, batch: Int, channels: Int, spatial: Int, groups: Int) {
    let perGroup = channels / groups
    let m = UncheckedSendable(value: mean), s = UncheckedSendable(value: scale)
    let x = UncheckedSendable(value: input), w = UncheckedSendable(value: weight)
    Parallel.forEach(batch * groups, grain: max(1, 16384 / max(perGroup * spatial, 1))) { items in
        for item in items {
            let (mean, inverseDeviation) = moments(x.value + item * perGroup * spatial, perGroup * spatial, eps: eps)
            for c in 0..<perGroup {
                let channel = item % groups * perGroup + c, index = item * perGroup + c
                m.value[index] = mean
                s.value[index] = w.value[channel] * inverseDeviation
            }
        }
    }
}

/// out[B, C, S] = the map over input[B, C, S]. `out` may be `input`.
func channelNormalizationForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ map: ChannelNormalization,
                                 batch: Int, spatial: Int) {
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input)
    Parallel.forEach(batch * map.channels, grain: max(1, 16384 / max(spatial, 1))) { items in
        for item in items {
            map.apply(o.value + item * spatial, x.value + item * spatial, spatial, image: item / map.channels,
                      channel: item % map.channels)
        }
    }
}

/// The gradients of GroupNorm(groups, C, eps) with affine weight[C] (torch.nn.functional.group_norm's backward) over
/// input[B, C, S]: dInput[B, C, S] = r/N · (N·ĝ − Σĝ − x̂ · Σ(ĝ·x̂)) per group of N = C/groups · S values, where
/// x̂ = (x − mean) · r, r = 1/√(var + eps) and ĝ = dOut · weight; dWeight[C] += Σ dOut · x̂ and dBias[C] += Σ dOut,
/// accumulated. The statistics are recomputed from the input, as the forward computes them.
func groupNormBackward(dInput: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>,
                       dOut: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
                       batch: Int, channels: Int, spatial: Int, groups: Int) {
    let perGroup = channels / groups, count = perGroup * spatial
    // Σ dOut and Σ dOut·x̂ of each image's channels, summed over the images afterwards in order.
    var sums = [Double](repeating: 0, count: 2 * batch * channels)
    sums.withUnsafeMutableBufferPointer { sums in
        let pointers = UncheckedSendable(value: (dInput, dOut, input, weight, sums.baseAddress!))
        Parallel.forEach(batch * groups, grain: max(1, 8192 / max(count, 1))) { items in
            let (dInput, dOut, input, weight, sums) = pointers.value
            for item in items {
                let x = input + item * count, g = dOut + item * count, dx = dInput + item * count
                let (mean, r) = moments(x, count, eps: eps)
                var sumG = 0.0, sumGX = 0.0   // Σĝ and Σĝ·x̂ over the group, in double
                for c in 0..<perGroup {
                    let channel = item % groups * perGroup + c, w = weight[channel]
                    var sumDy = 0.0, sumDyX = 0.0
                    for i in c * spatial..<(c + 1) * spatial {
                        sumDy += Double(g[i])
                        sumDyX += Double(g[i] * ((x[i] - mean) * r))
                    }
                    let image = item / groups
                    sums[image * channels + channel] = sumDy
                    sums[(batch + image) * channels + channel] = sumDyX
                    sumG += sumDy * Double(w)
                    sumGX += sumDyX * Double(w)
                }
                let n = Float(count), meanG = Float(sumG) / n, meanGX = Float(sumGX) / n
                for c in 0..<perGroup {
                    let w = weight[item % groups * perGroup + c]
                    for i in c * spatial..<(c + 1) * spatial {
                        dx[i] = r * (g[i] * w - meanG - (x[i] - mean) * r * meanGX)
                    }
                }
            }
        }
    }
    for channel in 0..<channels {
        var bias = 0.0, scale = 0.0
        for image in 0..<batch {
            bias += sums[image * channels + channel]
            scale += sums[(batch + image) * channels + channel]
        }
        dBias[channel] += Float(bias)
        dWeight[channel] += Float(scale)
    }
}

/// out[rows, F] = LayerNorm(F, eps)(input[rows, F]) · weight[F] + bias[F] — torch.nn.LayerNorm over the last
/// dimension. `out` may be `input`.
func layerNormForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                      _ bias: UnsafePointer<Float>, eps: Float, rows: Int, features: Int) {
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input)
    let w = UncheckedSendable(value: weight), b = UncheckedSendable(value: bias)
    Parallel.forEach(rows, grain: max(1, 16384 / max(features, 1))) { range in
        for row in range {
            let source = x.value + row * features, target = o.value + row * features
            let (mean, inverseDeviation) = moments(source, features, eps: eps)
            let m = Vector(repeating: mean), r = Vector(repeating: inverseDeviation)
            var i = 0
            while i + 8 <= features {
                ((Vector.load(source + i) - m) * r * Vector.load(w.value + i) + Vector.load(b.value + i)).store(target + i)
                i += 8
            }
            while i < features {
                target[i] = (source[i] - mean) * inverseDeviation * w.value[i] + b.value[i]
                i += 1
            }
        }
    }
}

/// The gradients of layerNormForward (torch.nn.LayerNorm's backward) over input[rows, F]: dInput = r/F · (F·ĝ − Σĝ −
/// x̂ · Σ(ĝ·x̂)) per row, with x̂ = (x − mean) · r and ĝ = dOut · weight; dWeight[F] += Σ dOut · x̂ and
/// dBias[F] += Σ dOut over the rows, accumulated. The statistics are recomputed from the input.
func layerNormBackward(dInput: UnsafeMutablePointer<Float>, dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>,
                       dOut: UnsafePointer<Float>, input: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
                       rows: Int, features: Int) {
    for row in 0..<rows {
        let x = input + row * features, g = dOut + row * features, dx = dInput + row * features
        let (mean, r) = moments(x, features, eps: eps)
        var sumG = 0.0, sumGX = 0.0
        for i in 0..<features {
            let normalized = (x[i] - mean) * r, scaled = g[i] * weight[i]
            dBias[i] += g[i]
            dWeight[i] += g[i] * normalized
            sumG += Double(scaled)
            sumGX += Double(scaled * normalized)
        }
        let n = Double(features), meanG = Float(sumG / n), meanGX = Float(sumGX / n)
        for i in 0..<features { dx[i] = r * (g[i] * weight[i] - meanG - (x[i] - mean) * r * meanGX) }
    }
}
