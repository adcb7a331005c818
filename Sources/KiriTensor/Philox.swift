// Philox.swift — seeded, counter-based random numbers for Kiri.
//
// Generator: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel Random Numbers:
// As Easy as 1, 2, 3", SC11; reference implementation: D. E. Shaw Research Random123,
// include/Random123/philox.h). A block is a pure function of a 128-bit counter and a
// 64-bit key, so every output element can be computed independently.
//
// Stream layout (stable; changing it changes every seeded image):
//   key      = (UInt32(seed & 0xFFFF_FFFF), UInt32(seed >> 32))
//   counter  = (UInt32(b & 0xFFFF_FFFF), UInt32(b >> 32), 0, 0)   for block index b
//   block b  → four words (w0, w1, w2, w3) → output elements 4b, 4b+1, 4b+2, 4b+3.
//
//   fillUniform: element 4b+j = Float(wj >> 8) * 2^-24            ∈ [0, 1), exact in Float.
//   fillNormal:  Box–Muller in Double on the word pairs (w0, w1) and (w2, w3):
//                  u1 = (Double(a) + 1) * 2^-32  ∈ (0, 1]   (never log(0))
//                  θ  = 2π · Double(b) * 2^-32   ∈ [0, 2π)
//                  r  = sqrt(-2 · ln u1)
//                element 4b   = Float(r·cos θ), 4b+1 = Float(r·sin θ)   from (w0, w1)
//                element 4b+2 = Float(r·cos θ), 4b+3 = Float(r·sin θ)   from (w2, w3)
//                All 32 bits of each word are used, so |z| ≤ sqrt(64 ln 2) ≈ 6.66.
//
// Element i depends only on (seed, i): the `threads` argument only changes how the
// index range is cut into contiguous chunks, never which numbers are produced.
// Tests/Fixtures/philox_reference.py is an independent Python model of this layout.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public enum Philox {
    // Multipliers and Weyl key increments for Philox4x32 (Random123 philox.h).
    static let m0: UInt32 = 0xD251_1F53
    static let m1: UInt32 = 0xCD9E_8D57
    static let w0: UInt32 = 0x9E37_79B9  // golden ratio
    static let w1: UInt32 = 0xBB67_AE85  // sqrt(3) - 1

    typealias Block = (UInt32, UInt32, UInt32, UInt32)

    /// One Philox4x32-10 block: the raw cipher, exposed for known-answer tests.
    public static func block(counter: (UInt32, UInt32, UInt32, UInt32), key: (UInt32, UInt32)) -> (UInt32, UInt32, UInt32, UInt32) {
        philox10(counter.0, counter.1, counter.2, counter.3, key.0, key.1)
    }

    /// Fill with N(0,1) numbers; element i depends only on (seed, i), so any thread count gives the same numbers.
    public static func fillNormal(_ out: UnsafeMutablePointer<Float>, count: Int, seed: UInt64, threads: Int = 1) {
        run(NormalKernel.self, out, count: count, seed: seed, threads: threads)
    }

    /// Uniform in [0, 1).
    public static func fillUniform(_ out: UnsafeMutablePointer<Float>, count: Int, seed: UInt64, threads: Int = 1) {
        run(UniformKernel.self, out, count: count, seed: seed, threads: threads)
    }

    // MARK: - Cipher

    @inline(__always)
    static func philox10(_ c0: UInt32, _ c1: UInt32, _ c2: UInt32, _ c3: UInt32,
                         _ k0: UInt32, _ k1: UInt32) -> Block {
        var c0 = c0, c1 = c1, c2 = c2, c3 = c3
        var k0 = k0, k1 = k1
        // 10 rounds; the key is bumped between rounds (9 bumps).
        for r in 0 ..< 10 {
            if r != 0 {
                k0 &+= w0
                k1 &+= w1
            }
            let p0 = UInt64(m0) &* UInt64(c0)
            let p1 = UInt64(m1) &* UInt64(c2)
            let n0 = UInt32(truncatingIfNeeded: p1 >> 32) ^ c1 ^ k0
            let n1 = UInt32(truncatingIfNeeded: p1)
            let n2 = UInt32(truncatingIfNeeded: p0 >> 32) ^ c3 ^ k1
            let n3 = UInt32(truncatingIfNeeded: p0)
            c0 = n0; c1 = n1; c2 = n2; c3 = n3
        }
        return (c0, c1, c2, c3)
    }

    @inline(__always)
    static func block(index b: UInt64, _ k0: UInt32, _ k1: UInt32) -> Block {
        philox10(UInt32(truncatingIfNeeded: b), UInt32(truncatingIfNeeded: b >> 32), 0, 0, k0, k1)
    }

    // MARK: - Block → four floats

    typealias Quad = (Float, Float, Float, Float)

    protocol Kernel: Sendable {
        static func quad(_ b: UInt64, _ k0: UInt32, _ k1: UInt32) -> Quad
    }

    enum UniformKernel: Kernel {
        @inline(__always)
        static func unit(_ x: UInt32) -> Float { Float(x >> 8) * 0x1p-24 }

        @inline(__always)
        static func quad(_ b: UInt64, _ k0: UInt32, _ k1: UInt32) -> Quad {
            let w = block(index: b, k0, k1)
            return (unit(w.0), unit(w.1), unit(w.2), unit(w.3))
        }
    }

    enum NormalKernel: Kernel {
        @inline(__always)
        static func pair(_ a: UInt32, _ b: UInt32) -> (Float, Float) {
            let u1 = (Double(a) + 1.0) * 0x1p-32          // (0, 1]
            let theta = (2.0 * Double.pi) * (Double(b) * 0x1p-32)  // [0, 2π)
            let r = (-2.0 * log(u1)).squareRoot()
            return (Float(r * cos(theta)), Float(r * sin(theta)))
        }

        @inline(__always)
        static func quad(_ b: UInt64, _ k0: UInt32, _ k1: UInt32) -> Quad {
            let w = block(index: b, k0, k1)
            let p = pair(w.0, w.1)
            let q = pair(w.2, w.3)
            return (p.0, p.1, q.0, q.1)
        }
    }

    // MARK: - Range filling and threading

    @inline(__always)
    static func lane(_ v: Quad, _ j: Int) -> Float {
        switch j {
        case 0: return v.0
        case 1: return v.1
        case 2: return v.2
        default: return v.3
        }
    }

    /// Writes elements [start, end) of the stream; start/end need not be multiples of 4.
    @inline(__always)
    static func fillRange<K: Kernel>(_: K.Type, _ out: UnsafeMutablePointer<Float>,
                                     _ start: Int, _ end: Int, _ k0: UInt32, _ k1: UInt32) {
        var i = start
        if i < end, i & 3 != 0 {  // head: a block shared with the previous chunk
            let v = K.quad(UInt64(i >> 2), k0, k1)
            let stop = min(end, (i | 3) + 1)
            while i < stop { out[i] = lane(v, i & 3); i += 1 }
        }
        let fullEnd = end & ~3
        while i < fullEnd {  // whole blocks
            let v = K.quad(UInt64(i >> 2), k0, k1)
            out[i] = v.0; out[i + 1] = v.1; out[i + 2] = v.2; out[i + 3] = v.3
            i += 4
        }
        if i < end {  // tail: a block shared with the next chunk
            let v = K.quad(UInt64(i >> 2), k0, k1)
            while i < end { out[i] = lane(v, i & 3); i += 1 }
        }
    }

    static func run<K: Kernel>(_ kernel: K.Type, _ out: UnsafeMutablePointer<Float>,
                               count: Int, seed: UInt64, threads: Int) {
        precondition(count >= 0, "Philox: negative count")
        guard count > 0 else { return }
        let k0 = UInt32(truncatingIfNeeded: seed)
        let k1 = UInt32(truncatingIfNeeded: seed >> 32)
        let chunks = max(1, min(threads, count))
        if chunks == 1 {
            fillRange(kernel, out, 0, count, k0, k1)
            return
        }
        // Each element's value depends on its index alone, so any split gives the same tensor.
        let target = UncheckedSendable(value: out)
        Parallel.split(count, pieces: chunks) { range in
            fillRange(kernel, target.value, range.lowerBound, range.upperBound, k0, k1)
        }
    }
}
