/// Error from a tensor operation. `argument` is the 1-based position, among the operation's parameters with the
/// receiver as 1, of the argument at fault (nil when none is), so a Lua binding can say
/// "bad argument #2 to 'add' (...)". Selectors that name the operation (a `BinaryOp`, a `Reduction`) are not counted:
/// in `t.reduce(.sum, dim: 5)` the dim is argument 2, as in the Lua call `t:sum(5)`. A result tensor passed as
/// `into` is argument 1, as in Torch7's `torch.add(result, a, b)`.
/// `message` is the parenthesised part, e.g. "shapes [2, 3] and [4] cannot be broadcast".
public struct TensorError: Error, CustomStringConvertible, Equatable, Sendable {
    public var argument: Int?
    public var message: String

    public init(argument: Int? = nil, _ message: String) {
        self.argument = argument
        self.message = message
    }

    public var description: String {
        guard let argument else { return message }
        return "bad argument #\(argument) (\(message))"
    }

    public static let outOfMemory = TensorError("not enough memory")
}

/// "[2, 3]"; every shape in an error message goes through here so they all read alike.
public func shapeString(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}

extension Tensor {
    /// Element count of `shape`, validated before anything is allocated: rank, non-negative sizes, and an
    /// overflow-checked product. Zero sizes are skipped in the product so that stride arithmetic on an empty
    /// tensor's other dimensions cannot overflow either.
    static func checkedCount(_ shape: [Int], argument: Int?) throws -> Int {
        guard shape.count <= maxRank else {
            throw TensorError(argument: argument, "rank \(shape.count) exceeds the maximum of \(maxRank)")
        }
        var product = 1
        for size in shape {
            guard size >= 0 else {
                throw TensorError(argument: argument, "negative size \(size) in \(shapeString(shape))")
            }
            if size == 0 { continue }
            let (next, overflow) = product.multipliedReportingOverflow(by: size)
            guard !overflow, next <= maxElements else {
                throw TensorError(argument: argument, "shape \(shapeString(shape)) exceeds \(maxElements) elements")
            }
            product = next
        }
        return shape.contains(0) ? 0 : product
    }

    /// `dim` made non-negative (-1 is the last of `rank` dimensions), or an error naming argument `argument`.
    /// Operations that insert a dimension (stack) pass rank + 1.
    static func normalizedDim(_ dim: Int, rank: Int, argument: Int) throws -> Int {
        guard dim >= -rank, dim < rank else {
            throw TensorError(argument: argument, "dimension \(dim) out of range for a rank-\(rank) tensor")
        }
        return dim < 0 ? dim + rank : dim
    }

    func normalizedDim(_ dim: Int, argument: Int) throws -> Int {
        try Tensor.normalizedDim(dim, rank: rank, argument: argument)
    }

    /// Released storage has no memory behind it; every operation checks its operands first.
    func requireLive(argument: Int) throws {
        if isReleased { throw TensorError(argument: argument, "tensor has been released") }
    }

    /// The tensor an operation writes: `into` if given (after checking it has exactly `shape`), else a new one.
    static func result(_ shape: [Int], into: Tensor?) throws -> Tensor {
        guard let into else { return try Tensor(shape: shape, argument: nil) }
        try into.requireLive(argument: 1)
        guard into.shape == shape else {
            throw TensorError(argument: 1, "result shape \(shapeString(into.shape)) does not match \(shapeString(shape))")
        }
        return into
    }
}
