import KiriKernels
import KiriTensor
import XCTest
@testable import KiriModels

/// The weight formats' conversions against independent references (Swift's own Float16 rounding, bfloat16's
/// nearest-even by exact Double distances, ggml's q8_0 written out), and every instruction set this CPU has
/// against the generic kernels, bit for bit.
final class WeightFormatTests: XCTestCase {
    /// Bit patterns covering every class: zeros, subnormals, normals, the largest, infinities and NaNs.
    func halfPatterns() -> [UInt16] {
        var patterns: [UInt16] = [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01]
        var state: UInt32 = 12345
        for _ in 0..<4000 {
            state = state &* 1_664_525 &+ 1_013_904_223
            patterns.append(UInt16(truncatingIfNeeded: state >> 16))
        }
        return patterns
    }

    func floats(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { i in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let unit = Float(state >> 40) / Float(1 << 24) * 2 - 1
            // Magnitudes from 2^-30 to 2^20, and exact ties for the rounding cases.
            return i % 7 == 0 ? Float(i) + 0.5 : unit * Float(sign: .plus, exponent: Int(state >> 58) % 50 - 30, significand: 1)
        }
    }

    func widen(_ bytes: [UInt8], _ format: WeightFormat, count: Int, with kernels: UnsafePointer<kiri_kernels>) -> [Float] {
        var out = [Float](repeating: .nan, count: count)
        bytes.withUnsafeBytes { source in kernels.pointee.widen(&out, source.baseAddress!, format.kernelType, count) }
        return out
    }

    func narrow(_ values: [Float], _ format: WeightFormat) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: format.rowBytes(values.count))
        bytes.withUnsafeMutableBytes { kiri_narrow($0.baseAddress!, values, format.kernelType, values.count) }
        return bytes
    }

    func testFloat16BothWaysMatchesSwiftsFloat16() {
        let patterns = halfPatterns()
        let bytes = patterns.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let widened = widen(bytes, .f16, count: patterns.count, with: kiri_kernels_for(KIRI_ISA_GENERIC))
        for (pattern, value) in zip(patterns, widened) {
            let expected = Float(Float16(bitPattern: pattern))
            XCTAssert(expected.isNaN ? value.isNaN : value.bitPattern == expected.bitPattern, "f16 \(pattern)")
        }
        let values = floats(4000, seed: 1) + [65504, 65520, 1e-8, -6e-8, .infinity, 3e-5]
        let narrowed = narrow(values, .f16)
        for (i, value) in values.enumerated() {
            let stored = UInt16(narrowed[2 * i]) | UInt16(narrowed[2 * i + 1]) << 8
            XCTAssertEqual(stored, Float16(value).bitPattern, "f16 of \(value)")
        }
    }

    func testBFloat16RoundsToNearestEven() {
        let values = floats(4000, seed: 2) + [1 + 0x1p-8, 1 + 0x3p-8, -(1 + 0x1p-8), .greatestFiniteMagnitude, -.infinity]
        let narrowed = narrow(values, .bf16)
        for (i, value) in values.enumerated() {
            let stored = UInt32(narrowed[2 * i]) | UInt32(narrowed[2 * i + 1]) << 8
            guard value.isFinite else {
                XCTAssertEqual(stored, value.bitPattern >> 16, "bf16 of \(value)")
                continue
            }
            // The bfloat16 neighbours of `value` (the one above may be 2^128, which rounds to infinity), the nearer
            // by exact distance, the even one on a tie.
            let low = Float(bitPattern: value.bitPattern & 0xFFFF_0000)
            let high = Double(low) + Double(value.sign == .minus ? -1 : 1) * Double(low.ulp) * 0x1p16
            let (below, above) = (abs(Double(value) - Double(low)), abs(high - Double(value)))
            let roundsDown = below < above || (below == above && (low.bitPattern >> 16) % 2 == 0)
            XCTAssertEqual(stored, (low.bitPattern >> 16) + (roundsDown ? 0 : 1), "bf16 of \(value)")
        }
        let widened = widen(narrowed, .bf16, count: values.count, with: kiri_kernels_for(KIRI_ISA_GENERIC))
        for (i, value) in widened.enumerated() {
            XCTAssertEqual(value.bitPattern, (UInt32(narrowed[2 * i]) | UInt32(narrowed[2 * i + 1]) << 8) << 16)
        }
    }

    /// ggml's quantize_row_q8_0_ref: d = max|x| / 127 stored as float16, q = round(x / d) half away from zero; and
    /// its dequantization q·d, within half a step of x.
    func testQ8_0MatchesGGMLsReference() {
        var values = floats(32 * 40, seed: 3)
        values.replaceSubrange(0..<32, with: [Float](repeating: 0, count: 32))   // an all-zero block: d = 0
        let bytes = narrow(values, .q8_0)
        XCTAssertEqual(bytes.count, 40 * 34)
        let widened = widen(bytes, .q8_0, count: values.count, with: kiri_kernels_for(KIRI_ISA_GENERIC))
        var worst: Float = 0
        for block in 0..<40 {
            let x = values[block * 32..<(block + 1) * 32]
            let d = x.map(abs).max()! / 127, inverse = d == 0 ? 0 : 1 / d
            let stored = UInt16(bytes[block * 34]) | UInt16(bytes[block * 34 + 1]) << 8
            XCTAssertEqual(stored, Float16(d).bitPattern, "scale of block \(block)")
            for (j, value) in x.enumerated() {
                let q = Int8(bitPattern: bytes[block * 34 + 2 + j])
                XCTAssertEqual(Int(q), Int((value * inverse).rounded(.toNearestOrAwayFromZero)), "block \(block) weight \(j)")
                let dequantized = widened[block * 32 + j]
                XCTAssertEqual(dequantized, Float(q) * Float(Float16(d)))
                worst = max(worst, abs(dequantized - value) / max(d, .leastNormalMagnitude))
            }
        }
        print("q8_0: largest |dequantized - x| = \(worst) of a block's step d")
        XCTAssertLessThanOrEqual(worst, 0.51)   // half a step, plus the float16 rounding of d
    }

    /// Every instruction set this CPU has widens every format bit for bit as the generic kernels do, at lengths
    /// that leave a tail after the vectors.
    func testEveryInstructionSetMatchesGeneric() throws {
        let generic = kiri_kernels_for(KIRI_ISA_GENERIC)!
        let values = floats(32 * 19, seed: 4)
        var checked: [String] = []
        for isa in 1..<Int(KIRI_ISA_COUNT.rawValue) {
            guard let kernels = kiri_kernels_for(kiri_isa(UInt32(isa))) else { continue }
            checked.append(KernelISA.names[isa])
            for format in WeightFormat.allCases {
                let bytes = narrow(values, format)
                for count in [32 * 19, 32 * 3, 32] + (format == .q8_0 ? [] : [7, 23, 33]) {
                    let expected = widen(bytes, format, count: count, with: generic)
                    let actual = widen(bytes, format, count: count, with: kernels)
                    XCTAssertEqual(actual.map(\.bitPattern), expected.map(\.bitPattern), "\(KernelISA.names[isa]) \(format) × \(count)")
                }
            }
        }
        print("instruction sets checked against generic: \(checked) (this CPU: \(KernelISA.detected))")
        if checked.isEmpty { throw XCTSkip("this CPU has only the generic kernels") }
    }

    func testSelectingAnInstructionSet() throws {
        let detected = KernelISA.detected
        defer { try? KernelISA.select(detected) }
        try KernelISA.select("generic")
        XCTAssertEqual(KernelISA.active, "generic")
        XCTAssertThrowsError(try KernelISA.select("sse9")) { XCTAssert("\($0)".contains("unknown instruction set 'sse9'"), "\($0)") }
        if detected != "avx512" {
            XCTAssertThrowsError(try KernelISA.select("avx512")) { XCTAssert("\($0)".contains("this CPU lacks avx512"), "\($0)") }
        }
    }
}
