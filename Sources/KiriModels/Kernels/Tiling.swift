// AutoencoderKL's tiled encode and decode: cutting tiles out, blending each into its neighbours, pasting the
// result. They move an image's worth of 3 or 4 channels once, next to a network pass per tile, so one thread does.

/// out[N, outHeight, outWidth][outTop..., outLeft...] = input[N, height, width][top..., left...], a `rows` × `columns`
/// window of each of N = B·C planes — the slicing `x[:, :, i : i + size, j : j + size]` and the torch.cat of the
/// kept parts in diffusers' AutoencoderKL.tiled_decode / _tiled_encode.
func copyWindowForward(_ out: UnsafeMutablePointer<Float>, outHeight: Int, outWidth: Int, outTop: Int, outLeft: Int,
                       _ input: UnsafePointer<Float>, height: Int, width: Int, top: Int, left: Int,
                       planes: Int, rows: Int, columns: Int) {
    for plane in 0..<planes {
        let source = input + plane * height * width + top * width + left
        let target = out + plane * outHeight * outWidth + outTop * outWidth + outLeft
        for row in 0..<rows { (target + row * outWidth).update(from: source + row * width, count: columns) }
    }
}

/// b[N, height, width]'s first `extent` rows blended with a[N, aHeight, width]'s last — AutoencoderKL.blend_v, for
/// N = B·C planes: b[y] = a[aHeight - extent + y] · (1 - y / extent) + b[y] · (y / extent), the weights rounded to
/// float32 as torch multiplies a float32 tensor by a Python float.
func blendVerticalForward(_ b: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, planes: Int, aHeight: Int, height: Int,
                          width: Int, extent: Int) {
    for plane in 0..<planes {
        let above = a + plane * aHeight * width, below = b + plane * height * width
        for y in 0..<extent {
            let weight = Float(Double(y) / Double(extent)), complement = Float(1 - Double(y) / Double(extent))
            let source = above + (aHeight - extent + y) * width, target = below + y * width
            for x in 0..<width { target[x] = source[x] * complement + target[x] * weight }
        }
    }
}

/// b[N, height, width]'s first `extent` columns blended with a[N, height, aWidth]'s last — AutoencoderKL.blend_h:
/// b[:, x] = a[:, aWidth - extent + x] · (1 - x / extent) + b[:, x] · (x / extent).
func blendHorizontalForward(_ b: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, planes: Int, height: Int, aWidth: Int,
                            width: Int, extent: Int) {
    let weights = (0..<extent).map { Float(Double($0) / Double(extent)) }
    let complements = (0..<extent).map { Float(1 - Double($0) / Double(extent)) }
    for plane in 0..<planes {
        for y in 0..<height {
            let source = a + (plane * height + y) * aWidth + aWidth - extent, target = b + (plane * height + y) * width
            for x in 0..<extent { target[x] = source[x] * complements[x] + target[x] * weights[x] }
        }
    }
}
