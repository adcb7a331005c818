import KiriTensor

/// Images of one size, optionally labelled, kept as the bytes their files hold (60000 × 784 bytes for Fashion-MNIST,
/// a quarter of float32) and converted to float per item or batch. Its bytes count against the run's memory cap.
public final class ImageDataset {
    public let count: Int
    public let channels: Int
    public let height: Int
    public let width: Int
    /// Class names, label 0 first; nil for a dataset without labels.
    public let classes: [String]?
    /// Whether `batch` mirrors images at random when its caller does not say.
    public var flip: Bool
    /// count items of channels × height × width bytes, each [C, H, W] row-major.
    let pixels: CountedBuffer<UInt8>
    /// count labels from 0 to classes.count - 1, when there are classes.
    let labels: CountedBuffer<Int32>?
    /// The last two permutations made, by seed and epoch: a batch may straddle two epochs, and consecutive steps share
    /// them.
    private var permutations: [(seed: UInt64, epoch: UInt64, order: CountedBuffer<Int32>)] = []

    /// The most items a dataset holds: positions and permutation entries fit Philox's 32-bit counter word and Int32.
    public static let maxItems = 1 << 30

    init(count: Int, channels: Int, height: Int, width: Int, classes: [String]?, pixels: CountedBuffer<UInt8>,
         labels: CountedBuffer<Int32>?, flip: Bool = false) {
        precondition(count > 0 && count <= Self.maxItems && pixels.count == count * channels * height * width
                     && (labels == nil) == (classes == nil) && (labels?.count ?? count) == count)
        self.count = count
        self.channels = channels
        self.height = height
        self.width = width
        self.classes = classes
        self.pixels = pixels
        self.labels = labels
        self.flip = flip
    }

    public var itemBytes: Int { channels * height * width }

    /// Item `index` (0-based) as a [C, H, W] tensor in [-1, 1], and its label.
    public func item(_ index: Int) throws -> (image: Tensor, label: Int?) {
        precondition((0..<count).contains(index), "ImageDataset.item: index out of range")
        let image = try Tensor(shape: [channels, height, width])
        convert(index, flipped: false, to: image.data)
        return (image, labels.map { Int($0.pointer[index]) })
    }

    /// Batch `step` (from 0) of `size` items: positions step·size ..< step·size + size of the sequence of epoch
    /// permutations (DataOrder), where epoch e = position / count. Images [size, C, H, W] in [-1, 1], mirrored per
    /// DataOrder.flips when `flip` (default: the dataset's own setting), and labels [size] when there are classes.
    /// Errors name the argument as `ds:batch(size, seed, step)` numbers it.
    public func batch(size: Int, seed: UInt64, step: Int, flip: Bool? = nil) throws -> (images: Tensor, labels: Tensor?) {
        guard size >= 1 else { throw DataError(argument: 1, "the batch size must be at least 1, got \(size)") }
        guard size <= count else {
            throw DataError(argument: 1, "a batch of \(size) is larger than the dataset's \(count) items")
        }
        guard step >= 0 else { throw DataError(argument: 3, "step must be 0 or more, got \(step)") }
        let (start, overflow) = step.multipliedReportingOverflow(by: size)
        guard !overflow, start <= Int.max - size else {
            throw DataError(argument: 3, "step \(step) is too large for batches of \(size)")
        }
        let flip = flip ?? self.flip
        let images = try Tensor(shape: [size, channels, height, width])
        let labelTensor = try labels.map { _ in try Tensor(shape: [size]) }
        let stride = itemBytes
        for slot in 0..<size {
            let position = start + slot
            let epoch = UInt64(position / count), offset = position % count
            let index = Int(try permutation(epoch).pointer[offset])
            convert(index, flipped: flip && DataOrder.flips(seed: seed, epoch: epoch, position: offset),
                    to: images.data + slot * stride)
            if let labels, let labelTensor { labelTensor.data[slot] = Float(labels.pointer[index]) }
        }
        return (images, labelTensor)

        func permutation(_ epoch: UInt64) throws -> CountedBuffer<Int32> {
            if let cached = permutations.first(where: { $0.seed == seed && $0.epoch == epoch }) { return cached.order }
            let order = try CountedBuffer<Int32>(count: count, what: "the data order's \(count) positions")
            DataOrder.permutation(count: count, seed: seed, epoch: epoch, into: order.pointer)
            permutations = Array(permutations.suffix(1)) + [(seed, epoch, order)]
            return order
        }
    }

    /// torchvision's ToTensor then Normalize(0.5, 0.5), in float32 as they compute it: (byte / 255 − 0.5) / 0.5.
    private static let scaled: [Float] = (0...255).map { (Float($0) / 255 - 0.5) / 0.5 }

    /// Writes item `index` to `output` as floats in [-1, 1], mirrored left to right when `flipped`.
    private func convert(_ index: Int, flipped: Bool, to output: UnsafeMutablePointer<Float>) {
        let source = pixels.pointer + index * itemBytes
        Self.scaled.withUnsafeBufferPointer { table in
            if !flipped {
                for i in 0..<itemBytes { output[i] = table[Int(source[i])] }
                return
            }
            for row in 0..<(channels * height) {
                let from = source + row * width, to = output + row * width
                for x in 0..<width { to[x] = table[Int(from[width - 1 - x])] }
            }
        }
    }
}
