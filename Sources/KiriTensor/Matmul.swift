import COpenBLAS

extension Tensor {
    /// numpy matmul on cblas_sgemm: 1-D·1-D is a dot product, 2-D·2-D a matrix product, a 1-D left operand is a row
    /// vector and a 1-D right operand a column vector (their unit dimension is dropped from the result), and higher
    /// ranks are stacks of matrices whose batch dimensions broadcast.
    public func matmul(_ other: Tensor, into: Tensor? = nil) throws -> Tensor {
        try requireLive(argument: 1)
        try other.requireLive(argument: 2)
        guard rank >= 1 else { throw TensorError(argument: 1, "matmul needs at least one dimension, got a rank-0 tensor") }
        guard other.rank >= 1 else { throw TensorError(argument: 2, "matmul needs at least one dimension, got a rank-0 tensor") }
        let left = rank == 1 ? [1] + shape : shape
        let right = other.rank == 1 ? other.shape + [1] : other.shape
        let (rows, inner, columns) = (left[left.count - 2], left[left.count - 1], right[right.count - 1])
        guard right[right.count - 2] == inner else {
            throw TensorError(argument: 2, "shapes \(shapeString(shape)) and \(shapeString(other.shape)) cannot be multiplied (\(inner) ≠ \(right[right.count - 2]))")
        }
        let leftBatch = Array(left.dropLast(2)), rightBatch = Array(right.dropLast(2))
        guard let batch = broadcastShape(leftBatch, rightBatch) else {
            throw TensorError(argument: 2, "batch dimensions of \(shapeString(shape)) and \(shapeString(other.shape)) cannot be broadcast")
        }
        var resultShape = batch
        if rank > 1 { resultShape.append(rows) }
        if other.rank > 1 { resultShape.append(columns) }
        let target = try Tensor.result(resultShape, into: into)
        // sgemm must not overwrite its own input, so an aliased result is computed aside and copied in.
        let aliased = target.storage === storage || target.storage === other.storage
        let out = aliased ? try Tensor(shape: resultShape) : target

        if inner == 0 {
            out.fill(0)
        } else if rightBatch.isEmpty {
            // Every left matrix meets the same right matrix: one tall product instead of a loop.
            try gemm(rows: batch.reduce(rows, *), inner: inner, columns: columns, data, other.data, out.data)
        } else {
            var walk = StridedWalk(shape: batch, strides: [
                broadcastStrides(leftBatch, to: batch).map { $0 * rows * inner },
                broadcastStrides(rightBatch, to: batch).map { $0 * inner * columns },
                contiguousStrides(batch).map { $0 * rows * columns },
            ])
            for _ in 0..<walk.rowCount {
                for i in 0..<walk.rowLength {
                    try gemm(rows: rows, inner: inner, columns: columns,
                             data + walk.offsets[0] + i * walk.innerStrides[0],
                             other.data + walk.offsets[1] + i * walk.innerStrides[1],
                             out.data + walk.offsets[2] + i * walk.innerStrides[2])
                }
                walk.next()
            }
        }
        if aliased { target.data.update(from: out.data, count: out.count) }
        return target
    }
}

/// c[rows×columns] = a[rows×inner] · b[inner×columns], all row-major and dense. One sgemm call cannot be
/// interrupted and an 8192² product takes seconds, so a product of more than `blockFlops` is computed in panels of
/// rows (and columns, when a row is itself too big) with the run's cancellation checked between them. 2^35 FLOP is
/// about 0.2 s here: each panel repacks the other operand, and smaller panels (2^31, 2^33) cost 15–25% of the
/// 4096² rate, this size none measurable.
private func gemm(rows: Int, inner: Int, columns: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                  _ c: UnsafeMutablePointer<Float>) throws {
    guard rows > 0, columns > 0 else { return }
    guard Int32(exactly: inner) != nil, Int32(exactly: columns) != nil, Int32(exactly: rows) != nil else {
        throw TensorError("matrix of \(rows)×\(inner)×\(columns) exceeds the 32-bit sizes BLAS accepts")
    }
    let blockFlops = Double(1 << 35)
    let flops = 2 * Double(rows) * Double(inner) * Double(columns)
    let cancellation = Cancellation.current
    guard let cancellation, flops > blockFlops else {
        sgemm(m: rows, n: columns, k: inner, a, lda: inner, b, ldb: columns, beta: 0, c, ldc: columns)
        return
    }
    // Panels at least 256 on a side, where OpenBLAS still runs near its full rate. In Double: the sizes' products
    // can pass Int.max.
    let rowBlock = min(rows, max(256, Int(blockFlops / (2 * Double(inner) * Double(columns)))))
    let columnBlock = min(columns, max(256, Int(blockFlops / (2 * Double(inner) * Double(rowBlock)))))
    for row in stride(from: 0, to: rows, by: rowBlock) {
        for column in stride(from: 0, to: columns, by: columnBlock) {
            try cancellation.check()
            sgemm(m: min(rowBlock, rows - row), n: min(columnBlock, columns - column), k: inner, a + row * inner,
                  lda: inner, b + column, ldb: columns, beta: 0, c + row * columns + column, ldc: columns)
        }
    }
}
