import KiriTensor

/// Named tensors a network loads by their diffusers keys: a safetensors file as saved, or a `TensorMap` that shows
/// a file of another layout (a single-file checkpoint) under those keys.
public protocol TensorSource: AnyObject {
    /// The file the tensors come from, which every error names.
    var path: String { get }
    /// Every key, in a stable order.
    var names: [String] { get }
    /// The shape tensor `name` has as a network loads it; nil when there is no such tensor.
    func shape(_ name: String) -> [Int]?
    /// Tensor `name` as float32, in new storage (which counts against the run's memory cap).
    func tensor(_ name: String) throws(ModelFileError) -> Tensor
    /// The format a network keeps weight `name` in: the file's dtype, unless the source says otherwise.
    func format(_ name: String) -> WeightFormat?
    /// Weight `name` copied into `out` as the file stores it, when that is `format` and nothing changes it on the
    /// way (a LoRA patch, a slice of a fused tensor is fine); false, with nothing copied, when it must be converted.
    func copyStored(_ name: String, as format: WeightFormat, into out: UnsafeMutableRawPointer) -> Bool
}

extension TensorSource {
    public func contains(_ name: String) -> Bool { shape(name) != nil }

    /// The tensor a network needs at `name`, which must exist with exactly `shape` (security case 31).
    public func requireTensor(_ name: String, shape: [Int]) throws(ModelFileError) -> Tensor {
        guard let actual = self.shape(name) else { throw ModelFileError(path, "missing tensor '\(name)'") }
        guard actual == shape else {
            throw ModelFileError(path, "tensor '\(name)' has shape \(shapeString(actual)) but the model needs \(shapeString(shape))")
        }
        return try tensor(name)
    }
}

extension SafetensorsFile: TensorSource {
    public func format(_ name: String) -> WeightFormat? { info(name).map { WeightFormat($0.dtype) } }

    public func copyStored(_ name: String, as format: WeightFormat, into out: UnsafeMutableRawPointer) -> Bool {
        copyStored(name, elements: 0..<(info(name)?.count ?? 0), as: format, into: out)
    }
}

/// A source whose weights a network keeps in `format` whatever the file stores (`weights=q8_0`, or bf16 for an
/// f32 checkpoint): everything else is the base's.
public final class ReformattedSource: TensorSource {
    public let base: any TensorSource
    public let weightFormat: WeightFormat

    public init(_ base: any TensorSource, format: WeightFormat) {
        (self.base, weightFormat) = (base, format)
    }

    public var path: String { base.path }
    public var names: [String] { base.names }
    public func shape(_ name: String) -> [Int]? { base.shape(name) }
    public func tensor(_ name: String) throws(ModelFileError) -> Tensor { try base.tensor(name) }
    public func format(_ name: String) -> WeightFormat? { base.shape(name) == nil ? nil : weightFormat }

    public func copyStored(_ name: String, as format: WeightFormat, into out: UnsafeMutableRawPointer) -> Bool {
        base.copyStored(name, as: format, into: out)
    }
}
