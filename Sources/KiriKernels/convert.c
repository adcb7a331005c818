// Conversions between float32 and the weight storage types. The plain versions are the reference; the vector
// versions widen the same bits (every conversion to float32 here is exact, and q8_0's q·d rounds once either way).
#include "kiri_kernels.h"

#include <math.h>
#include <string.h>

static inline float float_from_bits(uint32_t w) { float f; memcpy(&f, &w, 4); return f; }
static inline uint32_t bits_from_float(float f) { uint32_t w; memcpy(&w, &f, 4); return w; }

// IEEE half to single, exact, subnormals included: fp16_ieee_to_fp32_value of Maratyszcza's FP16 library (MIT),
// which ggml's GGML_COMPUTE_FP16_TO_FP32 falls back to.
static inline float half_to_float(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    const float normalized = float_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = float_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    return float_from_bits(sign | bits_from_float(two_w < (1u << 27) ? denormalized : normalized));
}

// Single to IEEE half, ties to even, overflow to infinity: fp16_ieee_from_fp32_value of the same library.
static inline uint16_t float_to_half(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = bits_from_float(f), shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = float_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = bits_from_float(base);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// bfloat16 is the top half of a float32; rounding adds just under half an ulp, plus the kept lowest bit for ties
// (c10::BFloat16's round_to_nearest_even). NaN stays a quiet NaN.
static inline uint16_t float_to_bfloat(float f) {
    uint32_t w = bits_from_float(f);
    if (f != f) return (uint16_t)((w >> 16) | 0x40);
    return (uint16_t)((w + 0x7FFFu + ((w >> 16) & 1)) >> 16);
}

static inline uint16_t load16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static void widen_generic(float *out, const void *in, kiri_dtype dtype, size_t count) {
    const unsigned char *bytes = in;
    switch (dtype) {
    case KIRI_F32:
        memcpy(out, in, 4 * count);
        break;
    case KIRI_F16:
        for (size_t i = 0; i < count; i++) out[i] = half_to_float(load16(bytes + 2 * i));
        break;
    case KIRI_BF16:
        for (size_t i = 0; i < count; i++) out[i] = float_from_bits((uint32_t)load16(bytes + 2 * i) << 16);
        break;
    case KIRI_Q8_0:
        for (size_t block = 0; block < count / KIRI_Q8_0_BLOCK; block++) {
            const unsigned char *b = bytes + block * KIRI_Q8_0_BLOCK_BYTES;
            const float d = half_to_float(load16(b));
            for (int j = 0; j < KIRI_Q8_0_BLOCK; j++) out[block * KIRI_Q8_0_BLOCK + j] = (float)(int8_t)b[2 + j] * d;
        }
        break;
    }
}

void kiri_narrow(void *out, const float *in, kiri_dtype dtype, size_t count) {
    unsigned char *bytes = out;
    switch (dtype) {
    case KIRI_F32:
        memcpy(out, in, 4 * count);
        break;
    case KIRI_F16:
        for (size_t i = 0; i < count; i++) { uint16_t h = float_to_half(in[i]); memcpy(bytes + 2 * i, &h, 2); }
        break;
    case KIRI_BF16:
        for (size_t i = 0; i < count; i++) { uint16_t h = float_to_bfloat(in[i]); memcpy(bytes + 2 * i, &h, 2); }
        break;
    case KIRI_Q8_0:
        // ggml-quants.c quantize_row_q8_0_ref: d = max|x| / 127, q = round(x / d), d kept as float16.
        for (size_t block = 0; block < count / KIRI_Q8_0_BLOCK; block++) {
            const float *x = in + block * KIRI_Q8_0_BLOCK;
            unsigned char *b = bytes + block * KIRI_Q8_0_BLOCK_BYTES;
            float amax = 0;
            for (int j = 0; j < KIRI_Q8_0_BLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
            const float d = amax / 127, id = d != 0 ? 1 / d : 0;
            uint16_t h = float_to_half(d);
            memcpy(b, &h, 2);
            for (int j = 0; j < KIRI_Q8_0_BLOCK; j++) b[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
        }
        break;
    }
}

const kiri_kernels kiri_kernels_generic = {KIRI_ISA_GENERIC, widen_generic};

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

AVX2 static void widen_avx2(float *out, const void *in, kiri_dtype dtype, size_t count) {
    const unsigned char *bytes = in;
    size_t i = 0;
    switch (dtype) {
    case KIRI_F16:
        for (; i + 8 <= count; i += 8)
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(bytes + 2 * i))));
        break;
    case KIRI_BF16:
        for (; i + 8 <= count; i += 8) {
            __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(bytes + 2 * i)));
            _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
        }
        break;
    case KIRI_Q8_0:
        for (; i < count; i += KIRI_Q8_0_BLOCK) {
            const unsigned char *b = bytes + i / KIRI_Q8_0_BLOCK * KIRI_Q8_0_BLOCK_BYTES;
            const __m256 d = _mm256_set1_ps(half_to_float(load16(b)));
            for (int j = 0; j < KIRI_Q8_0_BLOCK; j += 8) {
                __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + j)));
                _mm256_storeu_ps(out + i + j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
            }
        }
        break;
    case KIRI_F32:
        break;
    }
    if (i < count) widen_generic(out + i, bytes + kiri_dtype_bytes(dtype, i), dtype, count - i);
}

AVX512 static void widen_avx512(float *out, const void *in, kiri_dtype dtype, size_t count) {
    const unsigned char *bytes = in;
    size_t i = 0;
    switch (dtype) {
    case KIRI_F16:
        for (; i + 16 <= count; i += 16)
            _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(bytes + 2 * i))));
        break;
    case KIRI_BF16:
        for (; i + 16 <= count; i += 16) {
            __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(bytes + 2 * i)));
            _mm512_storeu_ps(out + i, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
        }
        break;
    case KIRI_Q8_0:
        for (; i < count; i += KIRI_Q8_0_BLOCK) {
            const unsigned char *b = bytes + i / KIRI_Q8_0_BLOCK * KIRI_Q8_0_BLOCK_BYTES;
            const __m512 d = _mm512_set1_ps(half_to_float(load16(b)));
            for (int j = 0; j < KIRI_Q8_0_BLOCK; j += 16) {
                __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2 + j)));
                _mm512_storeu_ps(out + i + j, _mm512_mul_ps(_mm512_cvtepi32_ps(q), d));
            }
        }
        break;
    case KIRI_F32:
        break;
    }
    if (i < count) widen_generic(out + i, bytes + kiri_dtype_bytes(dtype, i), dtype, count - i);
}

const kiri_kernels kiri_kernels_avx2 = {KIRI_ISA_AVX2, widen_avx2};
const kiri_kernels kiri_kernels_avx512 = {KIRI_ISA_AVX512, widen_avx512};
#endif
