// Which kernels run: CPUID and XGETBV decide once, at the first call (Torch7's THVectorDispatch.c, ggml's
// ggml_cpu_has_*). A vector path needs both the CPU's instructions and the OS saving their registers.
#include "kiri_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static kiri_isa detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return KIRI_ISA_GENERIC;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(fma && osxsave && avx && f16c)) return KIRI_ISA_GENERIC;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0x6) != 0x6) return KIRI_ISA_GENERIC;            // XMM and YMM state
    if (__get_cpuid_max(0, 0) < 7) return KIRI_ISA_GENERIC;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    if (!avx2) return KIRI_ISA_GENERIC;
    int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);   // F, DQ, BW, VL
    if (avx512 && (lo & 0xE0) == 0xE0) return KIRI_ISA_AVX512;  // opmask and ZMM state
    return KIRI_ISA_AVX2;
}
#else
static kiri_isa detect(void) { return KIRI_ISA_GENERIC; }
#endif

extern const kiri_kernels kiri_kernels_generic, kiri_kernels_avx2, kiri_kernels_avx512;

static const kiri_kernels *const tables[KIRI_ISA_COUNT] = {
    &kiri_kernels_generic,
#if defined(__x86_64__)
    &kiri_kernels_avx2, &kiri_kernels_avx512,
#else
    0, 0,
#endif
};

static int detected = -1;
static const kiri_kernels *active;

kiri_isa kiri_isa_detected(void) {
    if (detected < 0) detected = detect();   // idempotent, so a race only repeats the same answer
    return (kiri_isa)detected;
}

const char *kiri_isa_name(kiri_isa isa) {
    static const char *const names[KIRI_ISA_COUNT] = {"generic", "avx2", "avx512"};
    return (unsigned)isa < KIRI_ISA_COUNT ? names[isa] : "unknown";
}

const kiri_kernels *kiri_kernels_for(kiri_isa isa) {
    if ((unsigned)isa >= KIRI_ISA_COUNT || isa > kiri_isa_detected()) return 0;
    return tables[isa];
}

const kiri_kernels *kiri_kernels_active(void) {
    if (!active) active = kiri_kernels_for(kiri_isa_detected());
    return active;
}

int kiri_kernels_select(kiri_isa isa) {
    const kiri_kernels *chosen = kiri_kernels_for(isa);
    if (!chosen) return -1;
    active = chosen;
    return 0;
}

size_t kiri_dtype_bytes(kiri_dtype dtype, size_t count) {
    switch (dtype) {
    case KIRI_F32: return 4 * count;
    case KIRI_F16: case KIRI_BF16: return 2 * count;
    case KIRI_Q8_0: return count / KIRI_Q8_0_BLOCK * KIRI_Q8_0_BLOCK_BYTES;
    }
    return 0;
}
