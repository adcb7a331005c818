import KiriTensor

/// One low-rank update of a weight W [out, in] or [out, in, k, k]: W += factor · up · down, with up [out, r] and
/// down [r, in] (a conv's [out, r, 1, 1] and [r, in, k, k] read as [out, r] and [r, in·k·k]).
public struct LoRAPatch {
    public let up: Tensor
    public let down: Tensor
    /// scale · alpha / r.
    public let factor: Float

    var rank: Int { down.shape[0] }

    /// weight += factor · up · down, as one sgemm with beta 1 (PEFT's fuse_lora adds get_delta_weight the same way,
    /// peft/tuners/lora/layer.py); `path` and `key` name the weight in an error.
    func add(into weight: Tensor, path: String, key: String) throws(ModelFileError) {
        let rows = up.shape[0], columns = down.count / rank
        guard up.count == rows * rank, rows * columns == weight.count else {
            throw ModelFileError(path, "LoRA update up \(shapeString(up.shape)) · down \(shapeString(down.shape)) does not fit tensor '\(key)' \(shapeString(weight.shape))")
        }
        sgemm(m: rows, n: columns, k: rank, alpha: factor, up.data, lda: rank, down.data, ldb: columns, beta: 1,
              weight.data, ldc: columns)
    }
}

/// The updates to apply to each network, by the weight keys the networks read.
public struct LoRAPatches {
    public var unet: [String: [LoRAPatch]] = [:]
    public var textEncoder: [String: [LoRAPatch]] = [:]

    public init() {}

    public var isEmpty: Bool { unet.isEmpty && textEncoder.isEmpty }

    /// Both sets of updates: several LoRAs apply as the sum of their updates.
    public mutating func add(_ other: LoRAPatches) {
        unet.merge(other.unet) { $0 + $1 }
        textEncoder.merge(other.textEncoder) { $0 + $1 }
    }
}

/// A network's tensors with LoRA updates merged into its weights as the network reads them, in float32, into the
/// tensor the base source has just converted: a patched weight costs no memory beyond the network's own. Keys
/// and shapes are the base's, so a network loads from this source as from its file.
public final class LoRAMergedSource: TensorSource {
    public let base: any TensorSource
    public let patches: [String: [LoRAPatch]]

    public init(base: any TensorSource, patches: [String: [LoRAPatch]]) {
        self.base = base
        self.patches = patches
    }

    public var path: String { base.path }
    public var names: [String] { base.names }
    public func shape(_ name: String) -> [Int]? { base.shape(name) }
    public func format(_ name: String) -> WeightFormat? { base.format(name) }

    public func copyStored(_ name: String, as format: WeightFormat, into out: UnsafeMutableRawPointer) -> Bool {
        patches[name] == nil && base.copyStored(name, as: format, into: out)
    }

    public func tensor(_ name: String) throws(ModelFileError) -> Tensor {
        let weight = try base.tensor(name)
        for patch in patches[name] ?? [] {
            try patch.add(into: weight, path: path, key: name)
        }
        return weight
    }
}
