import KiriKernels

/// Element types Kiri reads from model files: safetensors' F32, F16 and BF16, and GGUF's Q8_0 too.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"
    /// ggml's blocks of 32 int8 weights sharing a float16 scale (WeightFormat.q8_0), from GGUF files only.
    case q8_0 = "Q8_0"

    /// Elements per block: a tensor (or a part read alone) must be whole blocks.
    public var blockSize: Int { self == .q8_0 ? 32 : 1 }

    /// Bytes of `count` elements, a multiple of `blockSize`.
    public func bytes(_ count: Int) -> Int { kiri_dtype_bytes(WeightFormat(self).kernelType, count) }

    /// Converts `count` elements (whole blocks) at `source` (any alignment) to float32 in `out`, with the kernels
    /// KIRI_ISA chose (F16C's conversion where the CPU has it: Swift's Float16 conversion is a library call per
    /// element here).
    public func convert(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        kiri_kernels_active().pointee.widen(out, source, WeightFormat(self).kernelType, count)
    }
}
