// Winograd filter transforms, made per call from the stored weights: keeping every 3x3 conv's transformed filters
// would cost 16/9 of its weights in float32, eight times an f16 file's share (1.8 GB for an SD 1.5 UNet).
#include "kiri_kernels.h"

enum { BLOCK = 64 };   // filters widened at a time: 576 floats, whole q8_0 blocks

void kiri_winograd_filters(float *u, size_t plane, const void *weights, kiri_dtype dtype, size_t filters) {
    const kiri_kernels *kernels = kiri_kernels_active();
    float g[9 * BLOCK];
    for (size_t first = 0; first < filters; first += BLOCK) {
        const size_t count = filters - first < BLOCK ? filters - first : BLOCK;
        kernels->widen(g, (const unsigned char *)weights + kiri_dtype_bytes(dtype, 9 * first), dtype, 9 * count);
        for (size_t f = 0; f < count; f++) {
            const float *k = g + 9 * f;
            float t[4][3];   // t = G g, 4x3
            for (int j = 0; j < 3; j++) {
                t[0][j] = k[j];
                t[1][j] = 0.5f * (k[j] + k[3 + j] + k[6 + j]);
                t[2][j] = 0.5f * (k[j] - k[3 + j] + k[6 + j]);
                t[3][j] = k[6 + j];
            }
            float *out = u + first + f;
            for (int i = 0; i < 4; i++) {   // u = t G^T, 4x4
                out[(4 * i + 0) * plane] = t[i][0];
                out[(4 * i + 1) * plane] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                out[(4 * i + 2) * plane] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                out[(4 * i + 3) * plane] = t[i][2];
            }
        }
    }
}
