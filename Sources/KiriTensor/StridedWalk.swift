/// Row-major element strides of a contiguous array of `shape`.
func contiguousStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 0, count: shape.count)
    var stride = 1
    for dim in shape.indices.reversed() {
        strides[dim] = stride
        stride *= shape[dim]
    }
    return strides
}

/// numpy broadcasting: align right, sizes must match or be 1. Nil if incompatible.
func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
    let rank = max(a.count, b.count)
    var result = [Int](repeating: 1, count: rank)
    for dim in 0..<rank {
        let x = dim < rank - a.count ? 1 : a[dim - (rank - a.count)]
        let y = dim < rank - b.count ? 1 : b[dim - (rank - b.count)]
        if x == y || y == 1 {
            result[dim] = x
        } else if x == 1 {
            result[dim] = y
        } else {
            return nil
        }
    }
    return result
}

/// Strides that read a contiguous array of `shape` at every index of the broadcast shape `target` (which `shape`
/// must broadcast to): 0 along broadcast dimensions, so one element is reused instead of copied.
func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
    let own = contiguousStrides(shape)
    let offset = target.count - shape.count
    return target.indices.map { dim in dim < offset || shape[dim - offset] == 1 ? 0 : own[dim - offset] }
}

/// Float memory seen through strides aligned to some loop shape: the common currency of the kernels. Tensors are
/// contiguous, but broadcast operands (stride 0), permuted inputs and slices of outputs are not.
struct Strided {
    var pointer: UnsafeMutablePointer<Float>
    /// Strides along the loop shape; nil when the operand is laid out exactly like the loop. That is the common case
    /// (a sampler step's operands all share one shape), and it needs no arrays and no walk.
    var strides: [Int]?

    func strides(for shape: [Int]) -> [Int] { strides ?? contiguousStrides(shape) }

    /// The stride of one flat row over the whole loop (1 dense, 0 a broadcast scalar), if there is one.
    var flatStride: Int? {
        guard let strides else { return 1 }
        return strides.allSatisfy { $0 == 0 } ? 0 : nil
    }
}

extension Tensor {
    /// This tensor read at every index of the broadcast shape `target`.
    func strided(to target: [Int]) -> Strided {
        Strided(pointer: data, strides: target == shape ? nil : broadcastStrides(shape, to: target))
    }
}

/// Visits a loop shape row by row for several operands at once, each with its own strides. Size-1 dimensions are
/// dropped and neighbouring dimensions merged wherever every operand allows, so contiguous operands form one long
/// row and index arithmetic is paid per row, never per element. Because tensors are contiguous, a broadcast
/// operand's innermost stride ends up 0 or 1, which is what the kernels' fast paths test for.
struct StridedWalk {
    private(set) var rowLength = 1
    private(set) var rowCount = 1
    /// Per operand, the stride along the row.
    private(set) var innerStrides: [Int]
    /// Per operand, the element offset of the current row's start.
    private(set) var offsets: [Int]
    private let operands: Int
    /// Outer (non-row) dimensions, outermost first.
    private let sizes: [Int]
    /// Outer dimension strides, `operands` per dimension.
    private let strides: [Int]
    private var index: [Int]

    init(shape: [Int], strides operandStrides: [[Int]]) {
        let operands = operandStrides.count
        var sizes: [Int] = [], strides: [Int] = []
        for dim in shape.indices where shape[dim] != 1 {
            let dimStrides = operandStrides.map { $0[dim] }
            let last = sizes.count - 1
            if last >= 0, (0..<operands).allSatisfy({ strides[last * operands + $0] == dimStrides[$0] * shape[dim] }) {
                sizes[last] *= shape[dim]
                strides.replaceSubrange(last * operands..<sizes.count * operands, with: dimStrides)
            } else {
                sizes.append(shape[dim])
                strides += dimStrides
            }
        }
        offsets = Array(repeating: 0, count: operands)
        innerStrides = offsets
        if let inner = sizes.popLast() {
            rowLength = inner
            innerStrides = Array(strides.suffix(operands))
            strides.removeLast(operands)
        }
        rowCount = shape.contains(0) ? 0 : sizes.reduce(1, *)
        index = Array(repeating: 0, count: sizes.count)
        self.operands = operands
        self.sizes = sizes
        self.strides = strides
    }

    /// Advances `offsets` to the start of the next row.
    mutating func next() {
        var dim = sizes.count - 1
        while dim >= 0 {
            let base = dim * operands
            index[dim] += 1
            if index[dim] < sizes[dim] {
                for operand in 0..<operands { offsets[operand] += strides[base + operand] }
                return
            }
            index[dim] = 0
            for operand in 0..<operands { offsets[operand] -= strides[base + operand] * (sizes[dim] - 1) }
            dim -= 1
        }
    }
}

/// Copies `source` into `target` over `shape`; the one kernel behind copy, expand, permute, narrow, cat and repeat.
func stridedCopy(_ shape: [Int], to target: Strided, from source: Strided) {
    var walk = StridedWalk(shape: shape, strides: [target.strides(for: shape), source.strides(for: shape)])
    let length = walk.rowLength
    let (targetStride, sourceStride) = (walk.innerStrides[0], walk.innerStrides[1])
    for _ in 0..<walk.rowCount {
        let out = target.pointer + walk.offsets[0]
        let input = source.pointer + walk.offsets[1]
        switch (targetStride, sourceStride) {
        case (1, 1): out.update(from: input, count: length)
        case (1, 0): out.update(repeating: input[0], count: length)
        default: for i in 0..<length { out[i &* targetStride] = input[i &* sourceStride] }
        }
        walk.next()
    }
}

/// out = f(a, b) over a broadcast `shape`, `out` contiguous. Always inlined so that each caller's closure is
/// specialised into the loops, which then vectorise. `out` may alias `a` or `b` (only possible between operands of
/// the result's shape, where element i is read before it is written); an aliased operand is passed to the row loop
/// as `out` itself, so the vectoriser sees one pointer rather than failing its runtime overlap check.
@inline(__always)
func map2(_ shape: [Int], _ out: UnsafeMutablePointer<Float>, _ a: Strided, _ b: Strided, _ f: (Float, Float) -> Float) {
    if let strideA = a.flatStride, let strideB = b.flatStride {
        return map2Row(shape.reduce(1, *), out, a.pointer, strideA, b.pointer, strideB, f)
    }
    var walk = StridedWalk(shape: shape, strides: [contiguousStrides(shape), a.strides(for: shape), b.strides(for: shape)])
    for _ in 0..<walk.rowCount {
        map2Row(walk.rowLength, out + walk.offsets[0], a.pointer + walk.offsets[1], walk.innerStrides[1],
                b.pointer + walk.offsets[2], walk.innerStrides[2], f)
        walk.next()
    }
}

/// One row of `map2`.
@inline(__always)
func map2Row(_ length: Int, _ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ strideA: Int,
             _ b: UnsafePointer<Float>, _ strideB: Int, _ f: (Float, Float) -> Float) {
    @inline(__always) func row(_ o: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) {
        switch (strideA, strideB) {
        case (1, 1):
            for i in 0..<length { o[i] = f(x[i], y[i]) }
        case (1, 0):
            let v = y[0]
            for i in 0..<length { o[i] = f(x[i], v) }
        case (0, 1):
            let u = x[0]
            for i in 0..<length { o[i] = f(u, y[i]) }
        default:
            for i in 0..<length { o[i] = f(x[i &* strideA], y[i &* strideB]) }
        }
    }
    if out == a {
        row(out, out, b)
    } else if out == b {
        row(out, a, out)
    } else {
        row(out, a, b)
    }
}

/// out = f(a, b, c) over a broadcast `shape`, as `map2`; only the all-contiguous case gets a fast path.
@inline(__always)
func map3(_ shape: [Int], _ out: UnsafeMutablePointer<Float>, _ a: Strided, _ b: Strided, _ c: Strided,
          _ f: (Float, Float, Float) -> Float) {
    var walk = StridedWalk(shape: shape, strides: [contiguousStrides(shape), a.strides(for: shape), b.strides(for: shape),
                                                   c.strides(for: shape)])
    let length = walk.rowLength
    let (strideA, strideB, strideC) = (walk.innerStrides[1], walk.innerStrides[2], walk.innerStrides[3])
    @inline(__always) func row(_ o: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                               _ z: UnsafePointer<Float>) {
        if strideA == 1, strideB == 1, strideC == 1 {
            for i in 0..<length { o[i] = f(x[i], y[i], z[i]) }
        } else {
            for i in 0..<length { o[i] = f(x[i &* strideA], y[i &* strideB], z[i &* strideC]) }
        }
    }
    for _ in 0..<walk.rowCount {
        let o = out + walk.offsets[0]
        let x = a.pointer + walk.offsets[1], y = b.pointer + walk.offsets[2], z = c.pointer + walk.offsets[3]
        if o == x {
            row(o, o, y, z)
        } else if o == y {
            row(o, x, o, z)
        } else if o == z {
            row(o, x, y, o)
        } else {
            row(o, x, y, z)
        }
        walk.next()
    }
}
