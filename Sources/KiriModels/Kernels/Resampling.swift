import KiriTensor

/// out[B, Ca + Cb, S] = torch.cat([a[B, Ca, S], b[B, Cb, S]], dim=1): an up block joining its input to a skip
/// connection.
func concatenateChannelsForward(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                batch: Int, channelsA: Int, channelsB: Int, spatial: Int) {
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: a), y = UncheckedSendable(value: b)
    Parallel.forEach(batch, grain: max(1, 65536 / max((channelsA + channelsB) * spatial, 1))) { range in
        for n in range {
            let target = o.value + n * (channelsA + channelsB) * spatial
            target.update(from: x.value + n * channelsA * spatial, count: channelsA * spatial)
            (target + channelsA * spatial).update(from: y.value + n * channelsB * spatial, count: channelsB * spatial)
        }
    }
}

/// The input index nearest-neighbour up-sampling reads for output index `index` of `outSize` (ATen's `nearest_idx`).
@inline(__always) private func nearestSource(_ index: Int, _ size: Int, _ outSize: Int) -> Int {
    if outSize == size { return index }
    if outSize == 2 * size { return index >> 1 }
    return min(Int(Float(index) * (Float(size) / Float(outSize))), size - 1)
}

/// out[N, outHeight, outWidth] = F.interpolate(input[N, H, W], size=(outHeight, outWidth), mode="nearest") for
/// N = B·C planes: output pixel i reads input ⌊i · H / outHeight⌋ (computed in float32, clamped, as ATen's
/// `nearest_idx`); at twice the size that is i / 2, which is also `scale_factor=2`.
func upsampleNearestForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                            outHeight: Int, outWidth: Int) {
    let rows = (0..<outHeight).map { nearestSource($0, height, outHeight) }
    let columns = (0..<outWidth).map { nearestSource($0, width, outWidth) }
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input)
    Parallel.forEach(planes, grain: max(1, 32768 / max(outHeight * outWidth, 1))) { range in
        for plane in range {
            let image = x.value + plane * height * width, target = o.value + plane * outHeight * outWidth
            for oy in 0..<outHeight {
                let row = image + rows[oy] * width, line = target + oy * outWidth
                if outWidth == 2 * width {
                    for ix in 0..<width {
                        line[2 * ix] = row[ix]
                        line[2 * ix + 1] = row[ix]
                    }
                } else {
                    for ox in 0..<outWidth { line[ox] = row[columns[ox]] }
                }
            }
        }
    }
}

/// out[N, H/2, W/2] = F.avg_pool2d(input[N, H, W], kernel_size=2, stride=2) for N = B·C planes (an odd last row or
/// column is dropped, as torch's floor mode) — Downsample2D without conv, inside ResnetBlock2D(down=True).
func averagePoolForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, planes: Int, height: Int, width: Int) {
    let outHeight = height / 2, outWidth = width / 2
    let o = UncheckedSendable(value: out), x = UncheckedSendable(value: input)
    Parallel.forEach(planes, grain: max(1, 32768 / max(height * width, 1))) { range in
        for plane in range {
            let image = x.value + plane * height * width, target = o.value + plane * outHeight * outWidth
            for oy in 0..<outHeight {
                let top = image + 2 * oy * width, bottom = top + width
                for ox in 0..<outWidth {
                    target[oy * outWidth + ox] = (top[2 * ox] + top[2 * ox + 1] + bottom[2 * ox] + bottom[2 * ox + 1]) * 0.25
                }
            }
        }
    }
}

/// dA[B, Ca, S] and dB[B, Cb, S] = the two parts of dOut[B, Ca + Cb, S]: the backward of concatenateChannelsForward.
func concatenateChannelsBackward(dA: UnsafeMutablePointer<Float>, dB: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                                 batch: Int, channelsA: Int, channelsB: Int, spatial: Int) {
    for n in 0..<batch {
        let source = dOut + n * (channelsA + channelsB) * spatial
        (dA + n * channelsA * spatial).update(from: source, count: channelsA * spatial)
        (dB + n * channelsB * spatial).update(from: source + channelsA * spatial, count: channelsB * spatial)
    }
}

/// dInput[N, H, W] = Σ of dOut[N, outHeight, outWidth] over the output pixels that read each input pixel: the
/// backward of upsampleNearestForward (ATen's upsample_nearest2d_backward).
func upsampleNearestBackward(_ dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                             outHeight: Int, outWidth: Int) {
    let rows = (0..<outHeight).map { nearestSource($0, height, outHeight) }
    let columns = (0..<outWidth).map { nearestSource($0, width, outWidth) }
    let d = UncheckedSendable(value: dInput), g = UncheckedSendable(value: dOut)
    Parallel.forEach(planes, grain: max(1, 32768 / max(outHeight * outWidth, 1))) { range in
        for plane in range {
            let image = d.value + plane * height * width, source = g.value + plane * outHeight * outWidth
            image.update(repeating: 0, count: height * width)
            for oy in 0..<outHeight {
                let row = image + rows[oy] * width, line = source + oy * outWidth
                for ox in 0..<outWidth { row[columns[ox]] += line[ox] }
            }
        }
    }
}

/// dInput[N, H, W] = dOut / 4 spread over each 2×2 window (0 in a dropped odd row or column): the backward of
/// averagePoolForward.
func averagePoolBackward(_ dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, planes: Int, height: Int, width: Int) {
    let outHeight = height / 2, outWidth = width / 2
    let d = UncheckedSendable(value: dInput), g = UncheckedSendable(value: dOut)
    Parallel.forEach(planes, grain: max(1, 32768 / max(height * width, 1))) { range in
        for plane in range {
            let image = d.value + plane * height * width, source = g.value + plane * outHeight * outWidth
            image.update(repeating: 0, count: height * width)
            for oy in 0..<outHeight {
                let top = image + 2 * oy * width, bottom = top + width
                for ox in 0..<outWidth {
                    let value = source[oy * outWidth + ox] * 0.25
                    (top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1]) = (value, value, value, value)
                }
            }
        }
    }
}
