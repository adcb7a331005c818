/// Element types Kiri reads from model files. Everything becomes float32 once, at load time.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"

    public var byteSize: Int { self == .f32 ? 4 : 2 }

    /// Converts `count` elements at `source` (any alignment) to float32 in `out`.
    public func convert(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32:
            for i in 0..<count { out[i] = Float(bitPattern: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
        case .f16:
            for i in 0..<count { out[i] = Float(Float16(bitPattern: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .bf16:
            // bfloat16 is the top half of a float32.
            for i in 0..<count {
                out[i] = Float(bitPattern: UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
            }
        }
    }
}
