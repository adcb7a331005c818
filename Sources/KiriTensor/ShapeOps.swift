/// Shape operations. Dims and indices are 0-based; negative dims count from the end (-1 = last), and so do negative
/// narrow starts and select indices, as in torch. Everything but reshape returns a new contiguous tensor, built by
/// `stridedCopy` reading this tensor through rearranged strides.
extension Tensor {
    /// A view sharing this tensor's storage, like torch.view. One size may be -1, inferred from the others.
    public func reshape(_ newShape: [Int]) throws -> Tensor {
        try requireLive(argument: 1)
        var resolved = newShape
        let inferred = newShape.indices.filter { newShape[$0] == -1 }
        guard inferred.count <= 1 else {
            throw TensorError(argument: 2, "only one size may be -1, got \(shapeString(newShape))")
        }
        if let dim = inferred.first {
            resolved[dim] = 1
            let known = try Tensor.checkedCount(resolved, argument: 2)
            guard known > 0, count % known == 0 else {
                throw TensorError(argument: 2, "cannot reshape \(shapeString(shape)) (\(count) elements) to \(shapeString(newShape))")
            }
            resolved[dim] = count / known
        }
        let newCount = try Tensor.checkedCount(resolved, argument: 2)
        guard newCount == count else {
            throw TensorError(argument: 2, "cannot reshape \(shapeString(shape)) (\(count) elements) to \(shapeString(resolved)) (\(newCount) elements)")
        }
        return try Tensor(shape: resolved, storage: storage)
    }

    /// Dimension i of the result is dimension dims[i] of this tensor.
    public func permute(_ dims: [Int]) throws -> Tensor {
        try requireLive(argument: 1)
        guard dims.count == rank else {
            throw TensorError(argument: 2, "permutation \(shapeString(dims)) has \(dims.count) dimensions, the tensor \(rank)")
        }
        let order = try dims.map { try normalizedDim($0, argument: 2) }
        guard Set(order).count == rank else {
            throw TensorError(argument: 2, "permutation \(shapeString(dims)) repeats a dimension")
        }
        return try permuted(order)
    }

    public func transpose(_ dim0: Int, _ dim1: Int) throws -> Tensor {
        try requireLive(argument: 1)
        var order = Array(0..<rank)
        order.swapAt(try normalizedDim(dim0, argument: 2), try normalizedDim(dim1, argument: 3))
        return try permuted(order)
    }

    private func permuted(_ order: [Int]) throws -> Tensor {
        let out = try Tensor(shape: order.map { shape[$0] })
        let strides = contiguousStrides(shape)
        stridedCopy(out.shape, to: Strided(pointer: out.data, strides: contiguousStrides(out.shape)),
                    from: Strided(pointer: data, strides: order.map { strides[$0] }))
        return out
    }

    /// Elements start..<start+length along dim.
    public func narrow(_ dim: Int, start: Int, length: Int) throws -> Tensor {
        try requireLive(argument: 1)
        let d = try normalizedDim(dim, argument: 2)
        let begin = try sliceStart(d, start, dim: dim, argument: 3)
        guard length >= 0, length <= shape[d] - begin else {
            throw TensorError(argument: 4, "length \(length) out of range: dimension \(dim) has size \(shape[d]) and the slice starts at \(begin)")
        }
        return try slice(d, begin, length)
    }

    /// The slice at `index` along dim, with that dimension removed.
    public func select(_ dim: Int, index: Int) throws -> Tensor {
        try requireLive(argument: 1)
        let d = try normalizedDim(dim, argument: 2)
        guard index >= -shape[d], index < shape[d] else {
            throw TensorError(argument: 3, "index \(index) out of range for dimension \(dim) of size \(shape[d])")
        }
        var reduced = shape
        reduced.remove(at: d)
        return try Tensor(shape: reduced, storage: slice(d, index < 0 ? index + shape[d] : index, 1).storage)
    }

    /// A start along dimension d (given as `dim`) made non-negative: 0...size, so an empty slice at the end is allowed.
    private func sliceStart(_ d: Int, _ start: Int, dim: Int, argument: Int) throws -> Int {
        guard start >= -shape[d], start <= shape[d] else {
            throw TensorError(argument: argument, "start \(start) out of range for dimension \(dim) of size \(shape[d])")
        }
        return start < 0 ? start + shape[d] : start
    }

    private func slice(_ d: Int, _ begin: Int, _ length: Int) throws -> Tensor {
        var sliced = shape
        sliced[d] = length
        let out = try Tensor(shape: sliced)
        let strides = contiguousStrides(shape)
        stridedCopy(sliced, to: Strided(pointer: out.data, strides: contiguousStrides(sliced)),
                    from: Strided(pointer: data + begin * strides[d], strides: strides))
        return out
    }

    /// Writes `source` into the narrow(dim, start, source.shape[dim]) slice of self (for inpainting-style writes).
    /// `source` must have self's shape except along dim.
    public func setSlice(_ dim: Int, start: Int, _ source: Tensor) throws {
        try requireLive(argument: 1)
        try source.requireLive(argument: 4)
        let d = try normalizedDim(dim, argument: 2)
        guard source.rank == rank, source.shape.indices.allSatisfy({ $0 == d || source.shape[$0] == shape[$0] }) else {
            throw TensorError(argument: 4, "cannot write \(shapeString(source.shape)) into dimension \(dim) of \(shapeString(shape))")
        }
        let begin = try sliceStart(d, start, dim: dim, argument: 3)
        guard source.shape[d] <= shape[d] - begin else {
            throw TensorError(argument: 3, "slice of \(source.shape[d]) starting at \(begin) overruns dimension \(dim) of size \(shape[d])")
        }
        let strides = contiguousStrides(shape)
        stridedCopy(source.shape, to: Strided(pointer: data + begin * strides[d], strides: strides),
                    from: Strided(pointer: source.data, strides: contiguousStrides(source.shape)))
    }

    /// Joins tensors along an existing dim; all other sizes must agree. The list is argument 1, dim argument 2.
    public static func cat(_ tensors: [Tensor], dim: Int) throws -> Tensor {
        guard let first = tensors.first else { throw TensorError(argument: 1, "cat needs at least one tensor") }
        for tensor in tensors { try tensor.requireLive(argument: 1) }
        let d = try first.normalizedDim(dim, argument: 2)
        var shape = first.shape
        shape[d] = 0
        for tensor in tensors {
            guard tensor.rank == first.rank,
                  tensor.shape.indices.allSatisfy({ $0 == d || tensor.shape[$0] == first.shape[$0] }) else {
                throw TensorError(argument: 1, "shapes \(shapeString(first.shape)) and \(shapeString(tensor.shape)) cannot be concatenated along dimension \(dim)")
            }
            shape[d] += tensor.shape[d]
        }
        let out = try Tensor(shape: shape)
        let strides = contiguousStrides(shape)
        var offset = 0
        for tensor in tensors {
            stridedCopy(tensor.shape, to: Strided(pointer: out.data + offset * strides[d], strides: strides),
                        from: Strided(pointer: tensor.data, strides: contiguousStrides(tensor.shape)))
            offset += tensor.shape[d]
        }
        return out
    }

    /// Joins equal-shaped tensors along a new dim (0...rank). The list is argument 1, dim argument 2.
    public static func stack(_ tensors: [Tensor], dim: Int) throws -> Tensor {
        guard let first = tensors.first else { throw TensorError(argument: 1, "stack needs at least one tensor") }
        guard dim >= -(first.rank + 1), dim <= first.rank else {
            throw TensorError(argument: 2, "dimension \(dim) out of range for stacking rank-\(first.rank) tensors")
        }
        let d = dim < 0 ? dim + first.rank + 1 : dim
        guard first.rank < maxRank else {
            throw TensorError(argument: 1, "stacking rank-\(first.rank) tensors would exceed the maximum rank of \(maxRank)")
        }
        var unit = first.shape
        unit.insert(1, at: d)
        let views = try tensors.map { tensor in
            try tensor.requireLive(argument: 1)
            guard tensor.shape == first.shape else {
                throw TensorError(argument: 1, "shapes \(shapeString(first.shape)) and \(shapeString(tensor.shape)) cannot be stacked")
            }
            return try Tensor(shape: unit, storage: tensor.storage)
        }
        return try cat(views, dim: d)
    }

    /// Broadcasts to `newShape` (which may add leading dims; -1 keeps an existing size) as a materialised copy.
    public func expand(_ newShape: [Int]) throws -> Tensor {
        try requireLive(argument: 1)
        let offset = newShape.count - rank
        let failure = TensorError(argument: 2, "cannot expand \(shapeString(shape)) to \(shapeString(newShape))")
        guard offset >= 0 else { throw failure }
        var resolved = newShape
        for dim in newShape.indices where newShape[dim] == -1 {
            guard dim >= offset else { throw failure }
            resolved[dim] = shape[dim - offset]
        }
        _ = try Tensor.checkedCount(resolved, argument: 2)
        guard broadcastShape(shape, resolved) == resolved else { throw failure }
        let out = try Tensor(shape: resolved)
        stridedCopy(resolved, to: Strided(pointer: out.data, strides: contiguousStrides(resolved)), from: strided(to: resolved))
        return out
    }

    /// torch.Tensor.repeat: tiles the tensor counts[i] times along each dim; extra leading counts add dims.
    public func repeated(_ counts: [Int]) throws -> Tensor {
        try requireLive(argument: 1)
        guard counts.count >= rank else {
            throw TensorError(argument: 2, "\(counts.count) repeat counts for a rank-\(rank) tensor")
        }
        let padded = Array(repeating: 1, count: counts.count - rank) + shape
        let resultShape = try zip(padded, counts).map { size, times in
            guard times >= 0 else { throw TensorError(argument: 2, "negative repeat count in \(shapeString(counts))") }
            let (product, overflow) = size.multipliedReportingOverflow(by: times)
            guard !overflow else { throw TensorError(argument: 2, "repeating \(shapeString(shape)) by \(shapeString(counts)) is too large") }
            return product
        }
        let out = try Tensor(shape: resultShape, argument: 2)
        // The result viewed as [count0, size0, count1, size1, …]: the source is read with stride 0 along each count.
        let ownStrides = contiguousStrides(padded)
        let loopShape = zip(counts, padded).flatMap { [$0, $1] }
        let sourceStrides = ownStrides.flatMap { [0, $0] }
        stridedCopy(loopShape, to: Strided(pointer: out.data, strides: contiguousStrides(loopShape)),
                    from: Strided(pointer: data, strides: sourceStrides))
        return out
    }

    public func clone() throws -> Tensor {
        try requireLive(argument: 1)
        let out = try Tensor(shape: shape)
        out.data.update(from: data, count: count)
        return out
    }
}
