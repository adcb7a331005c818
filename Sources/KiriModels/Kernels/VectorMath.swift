/// Eight float32 lanes: two SSE registers, or one AVX register where the target has it.
typealias Vector = SIMD8<Float>

extension Vector {
    @inline(__always) static func load(_ pointer: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
    }

    @inline(__always) func store(_ pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: self, as: Vector.self)
    }

    /// The first `count` (< 8) elements, the rest zero: the tail of a row.
    @inline(__always) static func load(_ pointer: UnsafePointer<Float>, count: Int) -> Vector {
        var result = Vector()
        for lane in 0..<count { result[lane] = pointer[lane] }
        return result
    }

    @inline(__always) func store(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        for lane in 0..<count { pointer[lane] = self[lane] }
    }
}

/// Lane-wise minimum and maximum through `replacing(with:where:)`, which compiles to a compare and a blend: the
/// standard library's generic `pointwiseMin`/`pointwiseMax` (and `clamped`) became per-lane loops, and a bit select
/// on a `SIMDMask` cast to integers moved each lane through a general register (9× slower, measured).
@inline(__always) func minimum(_ a: Vector, _ b: Vector) -> Vector { a.replacing(with: b, where: b .< a) }

@inline(__always) func maximum(_ a: Vector, _ b: Vector) -> Vector { a.replacing(with: b, where: b .> a) }

/// `mask ? a : b` per lane.
@inline(__always) func select(_ mask: SIMDMask<SIMD8<Int32>>, _ a: Vector, _ b: Vector) -> Vector { b.replacing(with: a, where: mask) }

@inline(__always) func clamp(_ x: Vector, _ lower: Float, _ upper: Float) -> Vector {
    minimum(maximum(x, Vector(repeating: lower)), Vector(repeating: upper))
}

/// e^x for every lane, within 2 ulp for x in [-87, 88] (Cephes `expf`: x = n ln 2 + r with |r| ≤ ln 2 / 2, a
/// degree-6 polynomial for e^r, then 2^n built in the exponent bits). Inputs are clamped to that range, so no lane
/// overflows to infinity or leaves the normal numbers; softmax and SiLU never need more.
@inline(__always) func vectorExp(_ x: Vector) -> Vector {
    let x = clamp(x, -87.33, 88)
    // Adding 1.5·2^23 rounds x·log2(e) to an integer and leaves that integer in the low mantissa bits.
    let shifter = Vector(repeating: 12582912)
    let shifted = x * 1.44269504088896341 + shifter
    let n = shifted - shifter
    let r = x - n * 0.693359375 - n * -2.12194440e-4
    var p = Vector(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * (r * r) + r + 1
    let exponent = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- Int32(bitPattern: Float(12582912).bitPattern)
    return y * unsafeBitCast((exponent &+ 127) &<< 23, to: Vector.self)
}

/// erf(x) for every lane as a rational function of x on [-4, 4] (beyond which float32 erf is ±1), the
/// approximation Eigen and XLA use for float32, within a few ulp.
@inline(__always) func vectorErf(_ x: Vector) -> Vector {
    let x = clamp(x, -4, 4)
    let x2 = x * x
    var p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08
    p = x2 * p + -2.10102402082508e-06
    p = x2 * p + -5.69250639462346e-05
    p = x2 * p + -7.34990630326855e-04
    p = x2 * p + -2.95459980854025e-03
    p = x2 * p + -1.60960333262415e-02
    var q = x2 * -1.45660718464996e-05 + -2.13374055278905e-04
    q = x2 * q + -1.68282697438203e-03
    q = x2 * q + -7.37332916720468e-03
    q = x2 * q + -1.42647390514189e-02
    return x * p / q
}

/// Applies `f` to `count` elements of `input` into `output` (which may be `input`), eight at a time.
@inline(__always) func vectorMap(_ output: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ count: Int,
                                 _ f: (Vector) -> Vector) {
    var i = 0
    while i + 8 <= count {
        f(Vector.load(input + i)).store(output + i)
        i += 8
    }
    if i < count { f(Vector.load(input + i, count: count - i)).store(output + i, count: count - i) }
}
