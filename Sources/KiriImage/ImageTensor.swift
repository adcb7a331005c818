import KiriTensor

extension PNGImage {
    /// The image as a [channels, height, width] float32 tensor of byte / 255, as torchvision's `to_tensor`.
    /// Allocates under `MemoryBudget.current`, so it throws TensorError when the budget refuses.
    public func tensor() throws -> Tensor {
        let tensor = try Tensor(shape: [channels, height, width])
        let plane = width * height
        let output = tensor.data
        pixels.withUnsafeBufferPointer { bytes in
            for pixel in 0..<plane {
                for channel in 0..<channels {
                    output[channel * plane + pixel] = Float(bytes[pixel * channels + channel]) / 255
                }
            }
        }
        return tensor
    }

    /// An image from a [C, H, W] or [1, C, H, W] tensor with C from 1 to 4 and values in [0, 1], each mapped as
    /// torchvision's `save_image`: clamp(x × 255 + 0.5, 0, 255) truncated to a byte, NaN to 0. Refuses more than
    /// `maxTextBytes` of text before converting any pixel.
    public init(tensor: Tensor, text: [TextChunk] = []) throws(ImageError) {
        try Self.checkTextTotal(text)
        var shape = tensor.shape
        if shape.count == 4 && shape[0] == 1 { shape.removeFirst() }
        guard !tensor.isReleased, shape.count == 3, (1...4).contains(shape[0]), shape[1] > 0, shape[2] > 0 else {
            throw ImageError(tensor.isReleased ? "the image tensor has been closed"
                : "expected an image of shape [C, H, W] or [1, C, H, W] with C from 1 to 4 and H, W at least 1, got \(shapeString(tensor.shape))")
        }
        let (channels, height, width) = (shape[0], shape[1], shape[2])
        let plane = height * width
        let input = tensor.data
        let pixels = [UInt8](unsafeUninitializedCapacity: plane * channels) { bytes, initialized in
            for pixel in 0..<plane {
                for channel in 0..<channels {
                    let scaled = input[channel * plane + pixel] * 255 + 0.5
                    bytes[pixel * channels + channel] = scaled.isNaN ? 0 : UInt8(min(max(scaled, 0), 255))
                }
            }
            initialized = plane * channels
        }
        try self.init(width: width, height: height, channels: channels, pixels: pixels, text: text)
    }
}
