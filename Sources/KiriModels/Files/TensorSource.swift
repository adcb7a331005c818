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

extension SafetensorsFile: TensorSource {}
