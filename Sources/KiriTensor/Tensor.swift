import Foundation

/// A float32 tensor: a shape over contiguous row-major storage. Operations return new contiguous tensors (or write
/// a caller's `into` tensor); only `reshape` shares storage, so every kernel can assume dense input.
public final class Tensor {
    public static let maxRank = 5
    /// Larger requests throw before allocating. 2^31 floats is 8 GiB, beyond any latent this engine handles.
    public static let maxElements = 1 << 31

    public let shape: [Int]
    public let storage: TensorStorage
    /// Product of shape (1 for rank 0).
    public let count: Int

    public var rank: Int { shape.count }
    public var data: UnsafeMutablePointer<Float> { storage.pointer }
    /// True once the storage was released by `__close`; every operation on it then throws.
    public var isReleased: Bool { storage.isReleased }

    /// Validated (rank ≤ 5, dims ≥ 0, count ≤ maxElements); contents uninitialised.
    public convenience init(shape: [Int]) throws {
        try self.init(shape: shape, argument: 1)
    }

    /// As `init(shape:)`, blaming argument `argument` for an invalid shape: operations pass the argument the shape
    /// came from, or nil when it is a result shape derived from several.
    init(shape: [Int], argument: Int?) throws {
        count = try Tensor.checkedCount(shape, argument: argument)
        self.shape = shape
        storage = try TensorStorage(count: count)
    }

    /// A view sharing `storage` (reshape); the element counts must match.
    public init(shape: [Int], storage: TensorStorage) throws {
        count = try Tensor.checkedCount(shape, argument: 1)
        guard !storage.isReleased else { throw TensorError(argument: 2, "storage has been released") }
        guard storage.count == count else {
            throw TensorError(argument: 2, "storage of \(storage.count) elements does not fit \(shapeString(shape)) (\(count) elements)")
        }
        self.shape = shape
        self.storage = storage
    }

    public convenience init(shape: [Int], values: [Float]) throws {
        let count = try Tensor.checkedCount(shape, argument: 1)
        guard values.count == count else {
            throw TensorError(argument: 2, "\(values.count) values do not fill \(shapeString(shape)) (\(count) elements)")
        }
        try self.init(shape: shape, argument: 1)
        data.update(from: values, count: count)
    }

    /// A copy of the elements, for tests and small conversions; empty once released.
    public var values: [Float] {
        isReleased ? [] : Array(UnsafeBufferPointer(start: data, count: count))
    }

    /// The value of a one-element tensor of any rank.
    public func item() throws -> Float {
        try requireLive(argument: 1)
        guard count == 1 else {
            throw TensorError(argument: 1, "item() needs a one-element tensor, got \(shapeString(shape))")
        }
        return data[0]
    }

    // MARK: Constructors

    public static func zeros(_ shape: [Int]) throws -> Tensor { try full(shape, 0) }

    public static func ones(_ shape: [Int]) throws -> Tensor { try full(shape, 1) }

    public static func full(_ shape: [Int], _ value: Float) throws -> Tensor {
        try Tensor(shape: shape).fill(value)
    }

    /// numpy.arange: start, start + step, … while below `end` (above, for a negative step). Each value is computed
    /// in Double as start + i·step and then rounded, so long ranges do not accumulate float32 error.
    public static func arange(_ start: Double, _ end: Double, _ step: Double) throws -> Tensor {
        guard start.isFinite else { throw TensorError(argument: 1, "start must be finite, got \(start)") }
        guard end.isFinite else { throw TensorError(argument: 2, "end must be finite, got \(end)") }
        guard step.isFinite, step != 0 else { throw TensorError(argument: 3, "step must be finite and non-zero, got \(step)") }
        let length = ((end - start) / step).rounded(.up)
        guard length <= Double(maxElements) else {
            throw TensorError(argument: 3, "arange(\(start), \(end), \(step)) exceeds \(maxElements) elements")
        }
        let tensor = try Tensor(shape: [length > 0 ? Int(length) : 0])
        for index in 0..<tensor.count { tensor.data[index] = Float(start + Double(index) * step) }
        return tensor
    }

    /// numpy.linspace / torch.linspace: `count` evenly spaced values with both ends included, computed in Double;
    /// the last value is exactly `end`.
    public static func linspace(_ start: Double, _ end: Double, _ count: Int) throws -> Tensor {
        guard count >= 0 else { throw TensorError(argument: 3, "count must be non-negative, got \(count)") }
        let tensor = try Tensor(shape: [count], argument: 3)
        let step = count > 1 ? (end - start) / Double(count - 1) : 0
        for index in 0..<count { tensor.data[index] = Float(start + Double(index) * step) }
        if count > 1 { tensor.data[count - 1] = Float(end) }
        return tensor
    }

    /// Standard normal samples from Philox: element i depends only on (seed, i).
    public static func randn(_ shape: [Int], seed: UInt64) throws -> Tensor {
        let tensor = try Tensor(shape: shape)
        Philox.fillNormal(tensor.data, count: tensor.count, seed: seed, threads: randomThreads(tensor.count))
        return tensor
    }

    /// Uniform samples in [0, 1) from Philox: element i depends only on (seed, i).
    public static func rand(_ shape: [Int], seed: UInt64) throws -> Tensor {
        let tensor = try Tensor(shape: shape)
        Philox.fillUniform(tensor.data, count: tensor.count, seed: seed, threads: randomThreads(tensor.count))
        return tensor
    }

    /// Every core for large tensors (Philox gives the same numbers at any thread count); one for small
    /// ones, where starting threads costs more than it saves.
    static func randomThreads(_ count: Int) -> Int {
        count >= 1 << 16 ? ProcessInfo.processInfo.activeProcessorCount : 1
    }
}
