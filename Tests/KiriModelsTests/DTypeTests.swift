import XCTest
import KiriModels

/// Conversions against bit patterns taken from the IEEE 754 and bfloat16 definitions.
final class DTypeTests: XCTestCase {
    func convert(_ dtype: DType, _ bytes: [UInt8]) -> [Float] {
        let count = bytes.count / dtype.bytes(1)
        var out = [Float](repeating: .nan, count: count)
        // One byte of offset makes every element unaligned.
        let shifted = [0] + bytes
        shifted.withUnsafeBytes { raw in out.withUnsafeMutableBufferPointer { dtype.convert(raw.baseAddress! + 1, count: count, into: $0.baseAddress!) } }
        return out
    }

    func testHalfPrecisionBitPatterns() {
        // 0x3C00 = 1, 0xC000 = -2, 0x7BFF = 65504 (largest finite), 0x0001 = 2^-24 (smallest subnormal), little-endian.
        XCTAssertEqual(convert(.f16, [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00]), [1, -2, 65504, 0x1p-24])
        XCTAssertTrue(convert(.f16, [0x00, 0x7C])[0].isInfinite)
    }

    func testBFloat16IsTheTopHalfOfFloat32() {
        // 0x3F80 = 1, 0xC040 = -3, 0x4049 = 3.140625.
        XCTAssertEqual(convert(.bf16, [0x80, 0x3F, 0x40, 0xC0, 0x49, 0x40]), [1, -3, 3.140625])
    }

    func testFloat32IsCopiedUnaligned() {
        XCTAssertEqual(convert(.f32, [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC1]), [1, -10])
    }
}
