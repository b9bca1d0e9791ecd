/* Elementwise kernels of the CPU path, float32: SiLU-and-mul of a fused gate-up projection and
 * rotate-half rotary embedding. Each is one pass over memory; torch's versions run two to six
 * ops with a temporary between each.
 *
 * silu_and_mul_f32: x [rows, 2d] (row stride x_stride elements), out [rows, d] (out_stride):
 *   out = silu(x[:, :d]) * x[:, d:], silu(g) = g / (1 + exp(-g)).
 * rotary_f32: x [tokens, heads, head_dim] (strides x_st, x_sh), out likewise (o_st, o_sh; out
 *   may be x, each head is read before it is written): with c, s the rows positions[t] of
 *   cos_cache, sin_cache [max_position, half] and x1, x2 the first two halves of a head's
 *   first 2 * half features, out1 = x1 * c - x2 * s, out2 = x2 * c + x1 * s; the features
 *   past 2 * half are copied (nothing to do in place).
 *
 * Rows (tokens) are split over num_threads OpenMP threads (torch's pool: see
 * pagoda/kernels/c_library.py), but only from a few thousand floats of work (*_PARALLEL_MIN):
 * below that, handing half the rows to a second thread costs more than it saves. Written
 * with GCC/Clang vector extensions (16 floats a vector); the last d % 16 (half % 16)
 * elements go one at a time.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vector_exp.h"

#define W 16

/* Work below which one thread beats two, measured on 2 cores while torch's worker spins
 * between ops (as in a forward pass): a second thread wins from about 5k outputs of SiLU
 * (an exp and a divide each) but only from about 12k floats of rotary (a few multiplies). */
#ifndef SILU_PARALLEL_MIN
#define SILU_PARALLEL_MIN 8192
#endif
#ifndef ROTARY_PARALLEL_MIN
#define ROTARY_PARALLEL_MIN 12288
#endif

INLINE void silu_row(const float *x, float *out, int d) {
    const float *up = x + d;
    const int vec = d / W * W;
    for (int i = 0; i < vec; i += W) {
        const vf g = load(x + i);
        store(out + i, g / (1.f + exp_v(-g)) * load(up + i));
    }
    for (int i = vec; i < d; i++) out[i] = x[i] / (1.f + expf(-x[i])) * up[i];
}

void silu_and_mul_f32(const float *x, long x_stride, float *out, long out_stride, long rows,
                      int d, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(num_threads) \
    if (rows * d >= SILU_PARALLEL_MIN)
    for (long r = 0; r < rows; r++) silu_row(x + r * x_stride, out + r * out_stride, d);
}

/* The rotation rounds each product, as torch's separate multiplies and adds do (no FMA), so
 * it matches RotaryEmbedding's torch path bit for bit. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

/* One head. Both halves are loaded before either is stored, so out may be x. */
INLINE void rotary_head(const float *x, float *out, const float *c, const float *s, int half,
                        int head_dim) {
#ifdef __clang__
#pragma clang fp contract(off)
#endif
    const int vec = half / W * W;
    for (int i = 0; i < vec; i += W) {
        const vf x1 = load(x + i), x2 = load(x + half + i);
        const vf cv = load(c + i), sv = load(s + i);
        store(out + i, x1 * cv - x2 * sv);
        store(out + half + i, x2 * cv + x1 * sv);
    }
    for (int i = vec; i < half; i++) {
        const float x1 = x[i], x2 = x[half + i];
        out[i] = x1 * c[i] - x2 * s[i];
        out[half + i] = x2 * c[i] + x1 * s[i];
    }
    if (out != x && head_dim > 2 * half)
        memcpy(out + 2 * half, x + 2 * half, sizeof(float) * (head_dim - 2 * half));
}

/* Returns nonzero, having written nothing, when a position is outside [0, max_position). */
int rotary_f32(const int64_t *positions, const float *x, long x_st, long x_sh, float *out,
               long o_st, long o_sh, const float *cos_cache, const float *sin_cache,
               long max_position, long tokens, int heads, int head_dim, int half,
               int num_threads) {
    for (long t = 0; t < tokens; t++)
        if (positions[t] < 0 || positions[t] >= max_position) return 1;
#pragma omp parallel for schedule(static) num_threads(num_threads) \
    if (tokens * heads * head_dim >= ROTARY_PARALLEL_MIN)
    for (long t = 0; t < tokens; t++) {
        const float *c = cos_cache + positions[t] * half, *s = sin_cache + positions[t] * half;
        for (int h = 0; h < heads; h++)
            rotary_head(x + t * x_st + h * x_sh, out + t * o_st + h * o_sh, c, s, half,
                        head_dim);
    }
    return 0;
}
