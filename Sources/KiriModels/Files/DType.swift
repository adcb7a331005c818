import KiriKernels

/// Element types Kiri reads from model files.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"

    public var byteSize: Int { self == .f32 ? 4 : 2 }

    /// Converts `count` elements at `source` (any alignment) to float32 in `out`, with the kernels KIRI_ISA chose
    /// (F16C's conversion where the CPU has it: Swift's Float16 conversion is a library call per element here).
    public func convert(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        kiri_kernels_active().pointee.widen(out, source, WeightFormat(self).kernelType, count)
    }
}
