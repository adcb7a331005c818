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

/// out[N, outHeight, outWidth] = F.interpolate(input[N, H, W], size=(outHeight, outWidth), mode="nearest") for
/// N = B·C planes: output pixel i reads input ⌊i · H / outHeight⌋ (computed in float32, clamped, as ATen's
/// `nearest_idx`); at twice the size that is i / 2, which is also `scale_factor=2`.
func upsampleNearestForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                            outHeight: Int, outWidth: Int) {
    func source(_ index: Int, _ size: Int, _ outSize: Int) -> Int {
        if outSize == size { return index }
        if outSize == 2 * size { return index >> 1 }
        return min(Int(Float(index) * (Float(size) / Float(outSize))), size - 1)
    }
    let rows = (0..<outHeight).map { source($0, height, outHeight) }
    let columns = (0..<outWidth).map { source($0, width, outWidth) }
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
