// Kiri's C kernels, each with a plain version that runs on any CPU and vector versions chosen once at start from
// CPUID (as Torch7's THVectorDispatch.c and ggml do). Each version is compiled for its own instruction set with a
// per-function `target` attribute, so the binary needs nothing beyond x86-64 (or aarch64) to start.
#ifndef KIRI_KERNELS_H
#define KIRI_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// Instruction sets, in order: each includes the ones before it.
typedef enum {
    KIRI_ISA_GENERIC = 0,     // plain C: the reference every other path is tested against
    KIRI_ISA_AVX2 = 1,        // AVX2, FMA and F16C (Haswell, Zen 1 and later)
    KIRI_ISA_AVX512 = 2,      // AVX-512 F, BW, VL and DQ (Skylake-X, Zen 4 and later)
    KIRI_ISA_COUNT = 3
} kiri_isa;

/// Weight storage types: float32, float16, bfloat16, and ggml's q8_0 (blocks of 32 weights: a float16 scale d
/// and 32 int8 q, each weight q·d; stable-diffusion.cpp's and ggml's block_q8_0).
typedef enum { KIRI_F32 = 0, KIRI_F16 = 1, KIRI_BF16 = 2, KIRI_Q8_0 = 3 } kiri_dtype;

enum { KIRI_Q8_0_BLOCK = 32, KIRI_Q8_0_BLOCK_BYTES = 34 };

/// The kernels of one instruction set.
typedef struct {
    kiri_isa isa;
    /// out[count] = the float32 values of `count` elements of type `dtype` at `in` (any alignment). For q8_0,
    /// `count` is a multiple of 32 and `in` points at a block.
    void (*widen)(float *out, const void *in, kiri_dtype dtype, size_t count);
} kiri_kernels;

/// out = `count` floats stored as `dtype`: rounded to the nearest float16 or bfloat16 (ties to even, as torch's
/// .to(dtype)), or quantized to q8_0 as ggml's quantize_row_q8_0_ref (count a multiple of 32). Plain C only: it
/// runs once, when a model loads.
void kiri_narrow(void *out, const float *in, kiri_dtype dtype, size_t count);

/// Winograd F(2x2, 3x3) filter transforms U = G g G^T, G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
/// (Lavin & Gray 2016), of `filters` consecutive 3x3 filters g stored as `dtype` at `weights` (widened with the active
/// kernels): point p of filter f goes to u[p * plane + f]. For q8_0, 9 * filters is a multiple of 32.
void kiri_winograd_filters(float *u, size_t plane, const void *weights, kiri_dtype dtype, size_t filters);

/// The best instruction set this CPU and OS support.
kiri_isa kiri_isa_detected(void);

/// "generic", "avx2" or "avx512".
const char *kiri_isa_name(kiri_isa isa);

/// The kernels for `isa`, or NULL when this CPU lacks it (tests run every path the CPU has).
const kiri_kernels *kiri_kernels_for(kiri_isa isa);

/// The kernels in use: the detected set until kiri_kernels_select chooses a lower one.
const kiri_kernels *kiri_kernels_active(void);

/// Uses `isa` from now on; returns 0, or -1 (and changes nothing) when this CPU lacks it. Not thread-safe with
/// kernels running: call it at start (KIRI_ISA) or between tests.
int kiri_kernels_select(kiri_isa isa);

/// Bytes of `count` elements of `dtype` (count a multiple of 32 for q8_0).
size_t kiri_dtype_bytes(kiri_dtype dtype, size_t count);

#endif
