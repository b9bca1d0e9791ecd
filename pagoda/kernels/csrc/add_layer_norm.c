/* Residual add fused with LayerNorm for the CPU, float32 or bfloat16 (weights in the same
 * dtype): out = LayerNorm(x + residual) * weight + bias, row by row, in one pass over memory
 * (torch reads and writes the sum once more between its add and its norm).
 *
 * x, residual and out are [rows, hidden] with row strides x_stride, r_stride, out_stride
 * (elements). As torch does, the sum is rounded to the input dtype before it is normalised;
 * mean and variance (two passes over the row, kept in float32 scratch) are float32. Rows are
 * split over num_threads OpenMP threads (torch's pool: see pagoda/kernels/c_library.py).
 * Written with GCC/Clang vector extensions (16 floats a vector); a row's last hidden % 16
 * elements go one at a time.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define W 16
#define INLINE static inline __attribute__((always_inline))

typedef float vf __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));

/* Element i of an input as float32 (bf16: a 16-bit shift). */
INLINE float get(const void *p, long i, int bf16) {
    if (!bf16) return ((const float *)p)[i];
    const uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

INLINE vf get_v(const void *p, long i, int bf16) {
    vf v;
    if (!bf16) {
        memcpy(&v, (const float *)p + i, sizeof v);
        return v;
    }
#ifdef __AVX512F__
    return (vf)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)((const uint16_t *)p + i))), 16);
#else
    vh h;
    memcpy(&h, (const uint16_t *)p + i, sizeof h);
    return (vf)(__builtin_convertvector(h, vu) << 16);
#endif
}

/* bf16 rounding (nearest even), as float32 bit patterns. */
INLINE uint32_t round_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
}

INLINE vu round_bits_v(vf v) {
    const vu u = (vu)v;
    return (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
}

INLINE float round_bf16(float f) {
    const uint32_t u = round_bits(f);
    memcpy(&f, &u, sizeof f);
    return f;
}

INLINE void put(void *p, long i, float f, int bf16) {
    if (bf16)
        ((uint16_t *)p)[i] = (uint16_t)(round_bits(f) >> 16);
    else
        ((float *)p)[i] = f;
}

INLINE void put_v(void *p, long i, vf v, int bf16) {
    if (!bf16) {
        memcpy((float *)p + i, &v, sizeof v);
        return;
    }
#ifdef __AVX512BF16__
    const __m256bh h = _mm512_cvtneps_pbh((__m512)v);
#else
    const vh h = __builtin_convertvector(round_bits_v(v) >> 16, vh);
#endif
    memcpy((uint16_t *)p + i, &h, sizeof h);
}

typedef int32_t vi __attribute__((vector_size(64)));

/* Horizontal sum in four halving steps. */
INLINE float hsum(vf v) {
    v += __builtin_shuffle(v, (vi){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    v += __builtin_shuffle(v, (vi){4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11});
    v += __builtin_shuffle(v, (vi){2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
    v += __builtin_shuffle(v, (vi){1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
    return v[0];
}

/* One row: s = x + residual (rounded like the inputs) into scratch, then normalised. Sums run
 * in four accumulators: one would make every row wait on a chain of hidden / 16 adds. */
INLINE void row(const void *x, const void *res, const float *w, const float *b, void *out,
                float *s, int hidden, float eps, int bf16) {
    const int vec = hidden / W * W;
    vf acc[4] = {{0}};
    float tail = 0.f;
    for (int i = 0; i < vec; i += 4 * W)
        for (int u = 0; u < 4; u++) {
            const int j = i + u * W;
            if (j >= vec) break;
            vf v = get_v(x, j, bf16) + get_v(res, j, bf16);
            if (bf16) v = (vf)round_bits_v(v);
            memcpy(s + j, &v, sizeof v);
            acc[u] += v;
        }
    for (int i = vec; i < hidden; i++) {
        const float v = get(x, i, bf16) + get(res, i, bf16);
        s[i] = bf16 ? round_bf16(v) : v;
        tail += s[i];
    }
    const float mean = (hsum(acc[0] + acc[1] + acc[2] + acc[3]) + tail) / hidden;
    acc[0] = acc[1] = acc[2] = acc[3] = (vf){0};
    tail = 0.f;
    for (int i = 0; i < vec; i += 4 * W)
        for (int u = 0; u < 4; u++) {
            const int j = i + u * W;
            if (j >= vec) break;
            vf d;
            memcpy(&d, s + j, sizeof d);
            d -= mean;
            acc[u] += d * d;
        }
    for (int i = vec; i < hidden; i++) tail += (s[i] - mean) * (s[i] - mean);
    const float var = (hsum(acc[0] + acc[1] + acc[2] + acc[3]) + tail) / hidden;
    const float rstd = 1.f / sqrtf(var + eps);
    for (int i = 0; i < vec; i += W) {
        vf d, wv, bv;
        memcpy(&d, s + i, sizeof d);
        memcpy(&wv, w + i, sizeof wv);
        memcpy(&bv, b + i, sizeof bv);
        put_v(out, i, (d - mean) * rstd * wv + bv, bf16);
    }
    for (int i = vec; i < hidden; i++) put(out, i, (s[i] - mean) * rstd * w[i] + b[i], bf16);
}

INLINE void add_layer_norm(const void *x, long x_stride, const void *residual, long r_stride,
                           const void *weight, const void *bias, void *out, long out_stride,
                           long rows, int hidden, float eps, int num_threads, int bf16) {
    const size_t esize = bf16 ? 2 : 4;
    float *wb = malloc(sizeof(float) * 2 * hidden); /* weight, bias as float32 */
    for (int i = 0; i < hidden; i++) {
        wb[i] = get(weight, i, bf16);
        wb[hidden + i] = get(bias, i, bf16);
    }
#pragma omp parallel num_threads(num_threads)
    {
        float *s = malloc(sizeof(float) * hidden);
#pragma omp for schedule(static)
        for (long r = 0; r < rows; r++)
            row((const char *)x + r * x_stride * esize,
                (const char *)residual + r * r_stride * esize, wb, wb + hidden,
                (char *)out + r * out_stride * esize, s, hidden, eps, bf16);
        free(s);
    }
    free(wb);
}

void add_layer_norm_f32(const float *x, long x_stride, const float *residual, long r_stride,
                        const float *weight, const float *bias, float *out, long out_stride,
                        long rows, int hidden, float eps, int num_threads) {
    add_layer_norm(x, x_stride, residual, r_stride, weight, bias, out, out_stride, rows, hidden,
                   eps, num_threads, 0);
}

void add_layer_norm_bf16(const uint16_t *x, long x_stride, const uint16_t *residual,
                         long r_stride, const uint16_t *weight, const uint16_t *bias,
                         uint16_t *out, long out_stride, long rows, int hidden, float eps,
                         int num_threads) {
    add_layer_norm(x, x_stride, residual, r_stride, weight, bias, out, out_stride, rows, hidden,
                   eps, num_threads, 1);
}

/* RMSNorm with the residual add fused, float32 (the Llama family's norm): with a residual,
 * sum = x + residual is written to sum_out; out = sum / sqrt(mean(sum^2) + eps) * weight.
 * Without one (residual NULL), out = the same of x. One read of the inputs, one write of each
 * output; the sum of squares runs in four accumulators as above. */
INLINE void rms_row(const float *x, const float *res, const float *w, float *out, float *sum,
                    int hidden, float eps) {
    const int vec = hidden / W * W;
    const float *s = res ? sum : x;
    vf acc[4] = {{0}};
    float tail = 0.f;
    for (int i = 0; i < vec; i += 4 * W)
        for (int u = 0; u < 4; u++) {
            const int j = i + u * W;
            if (j >= vec) break;
            vf v = get_v(x, j, 0);
            if (res) {
                v += get_v(res, j, 0);
                memcpy(sum + j, &v, sizeof v);
            }
            acc[u] += v * v;
        }
    for (int i = vec; i < hidden; i++) {
        const float v = res ? (sum[i] = x[i] + res[i]) : x[i];
        tail += v * v;
    }
    const float rstd = 1.f / sqrtf((hsum(acc[0] + acc[1] + acc[2] + acc[3]) + tail) / hidden + eps);
    for (int i = 0; i < vec; i += W) {
        vf v, wv;
        memcpy(&v, s + i, sizeof v);
        memcpy(&wv, w + i, sizeof wv);
        v = v * rstd * wv;
        memcpy(out + i, &v, sizeof v);
    }
    for (int i = vec; i < hidden; i++) out[i] = s[i] * rstd * w[i];
}

void add_rms_norm_f32(const float *x, long x_stride, const float *residual, long r_stride,
                      const float *weight, float *out, long out_stride, float *sum_out,
                      long s_stride, long rows, int hidden, float eps, int num_threads) {
    /* One thread below ~10k floats: measured on 2 cores, a second one only loses there. */
#pragma omp parallel for schedule(static) num_threads(num_threads) if (rows * hidden >= 10240)
    for (long r = 0; r < rows; r++)
        rms_row(x + r * x_stride, residual ? residual + r * r_stride : NULL, weight,
                out + r * out_stride, sum_out ? sum_out + r * s_stride : NULL, hidden, eps);
}
