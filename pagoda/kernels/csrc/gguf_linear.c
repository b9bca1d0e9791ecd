/* Linear layers straight from GGUF blocks on the CPU: out = x @ W.T in float32, with W kept as
 * its GGUF Q4_1 or Q8_0 blocks and dequantized inside the product. A decode step streams all
 * the weights from memory; blocks are 0.625 (Q4_1) or 1.0625 (Q8_0) bytes per weight against
 * float32's 4, so the step reads 4-6x fewer bytes.
 *
 * Packed layout (built once at load by pagoda/kernels/cpu_gguf_linear.py): W [N, K] is cut into
 * panels of 32 output columns (N % 32 == 0) and each panel into blocks of 32 inputs along K
 * (K % 32 == 0), the GGUF block size. Panel p's blocks are stored one after the other, panel
 * after panel, so each thread streams one contiguous range. One block of one panel is:
 *   Q4_1: d[32], m[32] (float16, one per column), then 16 rows of 32 bytes: row r, column c
 *         holds the column's values r (low nibble) and r + 16 (high nibble), as GGUF packs
 *         them; w = d * q + m.                                   640 bytes per 1,024 weights.
 *   Q8_0: d[32] (float16), then 32 rows of 32 int8: row r, column c holds value r; w = d * q.
 *                                                               1,088 bytes per 1,024 weights.
 *
 * Each thread takes whole panels. For a panel it dequantizes up to KC inputs of its 32
 * columns into a float32 buffer that stays in L1/L2, then runs every tile of up to MR rows of
 * x over that buffer with the outputs in registers (MR x 32 floats), so the dequantization
 * is paid once per weight and call however many rows x has. Past a few hundred rows x no
 * longer stays in cache across panels; callers use a float32 GEMM there.
 *
 * Needs AVX-512 (with F16C conversions); gguf_linear_supported() says whether this build has
 * it, and callers dequantize the weights instead when it does not.
 */
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define PANEL 32
#define QK 32     /* inputs per GGUF block */
#define KC 256    /* inputs dequantized at a time: a 32 KB buffer */
#define MR 12     /* rows of x per register tile: 24 accumulators (tile_any's cases) */
/* Bytes ahead of the block being dequantized that are prefetched. The blocks are read in
 * order, but the hardware prefetcher alone left 1-8-row products short of the bandwidth
 * (the default model's step at 1 row: 8.6 -> 6.6 ms). */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 8192
#endif

enum { FORMAT_Q4_1 = 0, FORMAT_Q8_0 = 1 };

int gguf_linear_supported(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}

#ifdef __AVX512F__
#define INLINE static inline __attribute__((always_inline))

static long block_bytes(int format) { return format == FORMAT_Q4_1 ? 640 : 1088; }

/* One Q4_1 block of a panel -> buf[32 inputs][32 columns]. */
INLINE void dequant_q4_1(const uint8_t *rec, float *buf) {
    const __m512 d0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rec));
    const __m512 d1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rec + 32)));
    const __m512 m0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rec + 64)));
    const __m512 m1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rec + 96)));
    const uint8_t *q = rec + 128;
    const __m512i low = _mm512_set1_epi32(0xF);
    for (int r = 0; r < 16; r++) {
        const __m512i b0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 32 * r)));
        const __m512i b1 =
            _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 32 * r + 16)));
        float *lo = buf + r * PANEL, *hi = buf + (r + 16) * PANEL;
        _mm512_store_ps(lo, _mm512_fmadd_ps(d0, _mm512_cvtepi32_ps(_mm512_and_si512(b0, low)), m0));
        _mm512_store_ps(lo + 16,
                        _mm512_fmadd_ps(d1, _mm512_cvtepi32_ps(_mm512_and_si512(b1, low)), m1));
        _mm512_store_ps(hi, _mm512_fmadd_ps(d0, _mm512_cvtepi32_ps(_mm512_srli_epi32(b0, 4)), m0));
        _mm512_store_ps(hi + 16,
                        _mm512_fmadd_ps(d1, _mm512_cvtepi32_ps(_mm512_srli_epi32(b1, 4)), m1));
    }
}

/* One Q8_0 block of a panel -> buf[32 inputs][32 columns]. */
INLINE void dequant_q8_0(const uint8_t *rec, float *buf) {
    const __m512 d0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rec));
    const __m512 d1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rec + 32)));
    const uint8_t *q = rec + 64;
    for (int r = 0; r < QK; r++) {
        const __m512i b0 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 32 * r)));
        const __m512i b1 =
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 32 * r + 16)));
        _mm512_store_ps(buf + r * PANEL, _mm512_mul_ps(d0, _mm512_cvtepi32_ps(b0)));
        _mm512_store_ps(buf + r * PANEL + 16, _mm512_mul_ps(d1, _mm512_cvtepi32_ps(b1)));
    }
}

/* out[i, 0:32] (+)= x[i, 0:kc] @ buf[0:kc, 0:32] for `rows` (a compile-time constant at each
 * call site, so the accumulators live in registers) rows of x. Few rows would leave the FMA
 * units waiting on their accumulators' latency, so they get `split` sets of them, one per
 * input k % split, summed at the end. */
INLINE void tile(int rows, const float *x, long x_stride, const float *buf, int kc, float *out,
                 long out_stride, int accumulate) {
    const int split = rows <= 2 ? 4 : rows <= 6 ? 2 : 1;
    __m512 acc[4][MR][2];
    for (int s = 0; s < split; s++)
        for (int i = 0; i < rows; i++) acc[s][i][0] = acc[s][i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k += split) {
        for (int s = 0; s < split; s++) {
            const __m512 w0 = _mm512_load_ps(buf + (k + s) * PANEL);
            const __m512 w1 = _mm512_load_ps(buf + (k + s) * PANEL + 16);
            for (int i = 0; i < rows; i++) {
                const __m512 a = _mm512_set1_ps(x[i * x_stride + k + s]);
                acc[s][i][0] = _mm512_fmadd_ps(a, w0, acc[s][i][0]);
                acc[s][i][1] = _mm512_fmadd_ps(a, w1, acc[s][i][1]);
            }
        }
    }
    for (int i = 0; i < rows; i++) {
        for (int s = 1; s < split; s++) {
            acc[0][i][0] = _mm512_add_ps(acc[0][i][0], acc[s][i][0]);
            acc[0][i][1] = _mm512_add_ps(acc[0][i][1], acc[s][i][1]);
        }
        float *o = out + i * out_stride;
        if (accumulate) {
            acc[0][i][0] = _mm512_add_ps(acc[0][i][0], _mm512_loadu_ps(o));
            acc[0][i][1] = _mm512_add_ps(acc[0][i][1], _mm512_loadu_ps(o + 16));
        }
        _mm512_storeu_ps(o, acc[0][i][0]);
        _mm512_storeu_ps(o + 16, acc[0][i][1]);
    }
}

#define TILE_CASE(n)                                                \
    case n:                                                         \
        tile(n, x, x_stride, buf, kc, out, out_stride, accumulate); \
        break;

static void tile_any(int rows, const float *x, long x_stride, const float *buf, int kc,
                     float *out, long out_stride, int accumulate) {
    switch (rows) {
        TILE_CASE(1) TILE_CASE(2) TILE_CASE(3) TILE_CASE(4) TILE_CASE(5) TILE_CASE(6)
        TILE_CASE(7) TILE_CASE(8) TILE_CASE(9) TILE_CASE(10) TILE_CASE(11) TILE_CASE(12)
    }
}
#endif

/* out [M, N] (row stride out_stride) = x [M, K] (row stride x_stride) @ W.T, W packed as
 * above in `format`. Returns nonzero (out untouched) when this build lacks AVX-512 or the
 * shapes are not multiples of 32. */
int gguf_linear_f32(const float *x, long x_stride, const uint8_t *packed, int format, float *out,
                    long out_stride, long M, long N, long K, int num_threads) {
#ifdef __AVX512F__
    if (N % PANEL || K % QK || (format != FORMAT_Q4_1 && format != FORMAT_Q8_0)) return 1;
    const long panels = N / PANEL, blocks = K / QK, rec = block_bytes(format);
    const long tiles = (M + MR - 1) / MR;
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (long p = 0; p < panels; p++) {
        float buf[KC * PANEL] __attribute__((aligned(64)));
        const uint8_t *panel = packed + p * blocks * rec;
        for (long k0 = 0; k0 < K; k0 += KC) {
            const int kc = (int)(K - k0 < KC ? K - k0 : KC);
            for (int b = 0; b < kc / QK; b++) {
                const uint8_t *r = panel + (k0 / QK + b) * rec;
                for (long o = 0; o < rec; o += 64)
                    _mm_prefetch((const char *)r + PREFETCH_AHEAD + o, _MM_HINT_T0);
                if (format == FORMAT_Q4_1)
                    dequant_q4_1(r, buf + b * QK * PANEL);
                else
                    dequant_q8_0(r, buf + b * QK * PANEL);
            }
            /* tiles of near-equal size, none over MR rows */
            for (long t = 0, i0 = 0; t < tiles; t++) {
                const long i1 = M * (t + 1) / tiles;
                tile_any((int)(i1 - i0), x + i0 * x_stride + k0, x_stride, buf, kc,
                         out + i0 * out_stride + p * PANEL, out_stride, k0 > 0);
                i0 = i1;
            }
        }
    }
    return 0;
#else
    (void)x, (void)x_stride, (void)packed, (void)format, (void)out, (void)out_stride;
    (void)M, (void)N, (void)K, (void)num_threads;
    return 1;
#endif
}
