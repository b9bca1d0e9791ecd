/* Bidirectional (encoder) attention for the CPU: each token of a sequence attends to every
 * token of that sequence; no mask, no cache. float32 or bfloat16 in and out.
 *
 * Layout: row r of q, k and v starts at q + r * in_stride (likewise k, v; elements, not
 * bytes), head h of a row at + h * D; out row r at out + r * out_stride, head h at + h * D.
 * Sequence s owns rows cu_seqlens[s] .. cu_seqlens[s + 1]. The (sequence, head) pairs are
 * dealt round-robin to num_threads OpenMP threads (torch's pool: see
 * pagoda/kernels/c_library.py), so each thread knows its next pair and pulls that pair's rows
 * into the cache while it computes the current one (rows of one head are 64 bytes every
 * in_stride: without this the loads wait on memory for a third of the time).
 *
 * Two paths compute a pair:
 *  - vector (float32, and bfloat16 without AMX): float32 throughout, any head_dim D;
 *  - AMX (bfloat16, D a multiple of 32, CPU and kernel willing): tile multiplies for the two
 *    products, softmax in float32, probabilities rounded to bf16 (as torch's CPU flash
 *    attention does for bf16).
 * Scores are kept in base 2 (scale * log2(e) folded in), so the softmax is exp2.
 *
 * Written with GCC/Clang vector extensions: 16-float vectors are one AVX-512 register, two
 * AVX2 ones or four NEON ones, whatever -march=native gives. bf16 -> f32 is a 16-bit shift;
 * f32 -> bf16 rounds to nearest even (NaNs whose payload is only in the low 16 bits would
 * round to inf; attention outputs never carry such NaNs).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "vector_exp.h"

#define W 16 /* floats in a vector */
#define R 8  /* query rows per block on the vector path */
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));

INLINE vf splat(float x) { return (vf){0} + x; }

/* vmax, round to nearest and p * 2^n: one instruction each with AVX-512, else portable
 * (vround and vscale2 only for the -125 <= x <= 0 that exp2v passes). */
#ifdef __AVX512F__
#include <immintrin.h>

INLINE vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }

INLINE vf vround(vf x) {
    return (vf)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

INLINE vf vscale2(vf p, vf n) { return (vf)_mm512_scalef_ps((__m512)p, (__m512)n); }
#else
INLINE vf vmax(vf a, vf b) { return blend(a > b, a, b); }

INLINE vf vround(vf x) {
    return __builtin_convertvector(__builtin_convertvector(x - 0.5f, vi), vf); /* truncation */
}

INLINE vf vscale2(vf p, vf n) { return p * (vf)((__builtin_convertvector(n, vi) + 127) << 23); }
#endif

INLINE vf vadd(vf a, vf b) { return a + b; }

/* 2^x for x <= 0 (x = -inf included): 2^n * p(f), n = round(x), f = x - n in [-0.5, 0.5].
 * precise: the Cephes exp2f polynomial (about 1 ulp); else a cubic (7.7e-5 relative, for
 * probabilities rounded to bf16, 2^-9, anyway). x is clamped to -125 so that every result is
 * a normal float (denormals would cost microcode assists); 2^-125 is as good as 0 here. */
INLINE vf exp2v(vf x, int precise) {
    x = vmax(x, splat(-125.f));
    const vf n = vround(x), f = x - n;
    vf p;
    if (precise) {
        p = splat(1.535336188319500e-4f);
        p = p * f + 1.339887440266574e-3f;
        p = p * f + 9.618437357674640e-3f;
        p = p * f + 5.550332471162809e-2f;
        p = p * f + 2.402264791363012e-1f;
        p = p * f + 6.931472028550421e-1f;
        p = p * f + 1.f;
    } else {
        p = splat(5.508876703269269e-2f);
        p = p * f + 2.4260465590804678e-1f;
        p = p * f + 6.932762833317945e-1f;
        p = p * f + 9.999289048197669e-1f;
    }
    return vscale2(p, n);
}

/* 16 floats to bf16, rounded to nearest even. */
INLINE void store_bf16(uint16_t *p, vf v) {
#ifdef __AVX512BF16__
    const __m256bh h = _mm512_cvtneps_pbh((__m512)v);
#else
    const vu u = (vu)v;
    const vh h = __builtin_convertvector((u + 0x7fffu + ((u >> 16) & 1u)) >> 16, vh);
#endif
    memcpy(p, &h, sizeof h);
}

INLINE float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

INLINE uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Elements off .. off + n - 1 (n <= W) of an input as floats, zero past n. */
INLINE vf load_in(const void *base, long off, int n, int bf16) {
    if (n == W) {
        if (!bf16) return load((const float *)base + off);
        vh h;
        memcpy(&h, (const uint16_t *)base + off, sizeof h);
        return (vf)(__builtin_convertvector(h, vu) << 16);
    }
    vf v = {0};
    for (int i = 0; i < n; i++)
        v[i] = bf16 ? bf16_to_f32(((const uint16_t *)base)[off + i]) : ((const float *)base)[off + i];
    return v;
}

/* Lanes 0 .. n - 1 (n <= W) of v to elements off .. of an output. */
INLINE void store_out(void *base, long off, vf v, int n, int bf16) {
    if (n == W) {
        if (!bf16) {
            store((float *)base + off, v);
            return;
        }
        store_bf16((uint16_t *)base + off, v);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (bf16)
            ((uint16_t *)base)[off + i] = f32_to_bf16(v[i]);
        else
            ((float *)base)[off + i] = v[i];
    }
}

/* Lane pairings of 16 x 16 transposes and reductions: for vectors x, y and level b = 8, 4, 2,
 * 1, LO_b takes the lanes of x with bit b clear and puts y's below-b lanes beside them; HI_b
 * takes the rest. */
#define LO_8 ((vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23})
#define HI_8 ((vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31})
#define LO_4 ((vi){0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27})
#define HI_4 ((vi){4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31})
#define LO_2 ((vi){0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29})
#define HI_2 ((vi){2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31})
#define LO_1 ((vi){0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30})
#define HI_1 ((vi){1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31})

/* In-place transpose of a 16 x 16 tile of 32-bit words held as 16 row vectors: at each level
 * rows i and i + b (bit b of i clear) swap their off-diagonal b x b blocks. */
#define SWAP_BLOCKS(b)                                   \
    for (int i = 0; i < W; i++) {                        \
        if (i & (b)) continue;                           \
        vi x = t[i], y = t[i + (b)];                     \
        t[i] = __builtin_shuffle(x, y, LO_##b);          \
        t[i + (b)] = __builtin_shuffle(x, y, HI_##b);    \
    }

INLINE void transpose16(vi t[W]) {
    SWAP_BLOCKS(8)
    SWAP_BLOCKS(4)
    SWAP_BLOCKS(2)
    SWAP_BLOCKS(1)
}

/* t[0][i] = op-reduction of t[i] over its lanes, for 16 vectors at once: each level halves
 * the vectors, pairing lanes as transpose16 does (lane i of the result is row i). */
#define REDUCE_LEVEL(b, op)                                                                \
    for (int i = 0; i < (b); i++)                                                          \
        t[i] = op(__builtin_shuffle(t[i], t[i + (b)], LO_##b),                             \
                  __builtin_shuffle(t[i], t[i + (b)], HI_##b));

#define REDUCE16(op) REDUCE_LEVEL(8, op) REDUCE_LEVEL(4, op) REDUCE_LEVEL(2, op) REDUCE_LEVEL(1, op)

INLINE vf reduce_max16(vf t[W]) {
    REDUCE16(vmax)
    return t[0];
}

INLINE vf reduce_sum16(vf t[W]) {
    REDUCE16(vadd)
    return t[0];
}

/* Probabilities from scores, rows 0 .. rows - 1 (rows <= 16) of s [.][Lp] (L real keys,
 * Lp = L rounded up to W): p = exp2(c * (s - max s)), 0 past L, written to p [.][ldp] as
 * f32 (p may be s) or bf16; inv[r] = 1 / sum of row r (before bf16 rounding, whose errors
 * average out). The rows' reductions run together, so no row waits on its own. */
INLINE void softmax_rows(const float *s, void *p, long ldp, int rows, int L, int Lp, float c,
                         float *inv, int bf16) {
    const int last = Lp - W;
    const vi lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const vi keep = lane < L - last;
    vf t[W];
    for (int r = 0; r < W; r++) {
        if (r >= rows) {
            t[r] = (vf){0};
            continue;
        }
        const float *sr = s + (long)r * Lp;
        vf m = blend(keep, load(sr + last), splat(-INFINITY));
        for (int j = 0; j < last; j += W) m = vmax(m, load(sr + j));
        t[r] = m;
    }
    float off[W];
    store(off, reduce_max16(t) * c);
    for (int r = 0; r < W; r++) {
        if (r >= rows) {
            t[r] = splat(1.f);
            continue;
        }
        const float *sr = s + (long)r * Lp;
        vf sum = {0};
        for (int j = 0; j < Lp; j += W) {
            vf e = exp2v(load(sr + j) * c - off[r], !bf16);
            if (j == last) e = blend(keep, e, (vf){0});
            if (bf16)
                store_bf16((uint16_t *)p + r * ldp + j, e);
            else
                store((float *)p + r * ldp + j, e);
            sum += e;
        }
        t[r] = sum;
    }
    store(inv, 1.f / reduce_sum16(t));
}

/* A (sequence, head) pair: its first row's head in q, k, v and out, and its length. */
typedef struct {
    const char *q, *k, *v;
    char *out;
    int L;
} pair_t;

/* Pulls rows from .. to - 1 of a pair (row_bytes each) into the cache ahead of its turn. */
INLINE void prefetch_rows(const pair_t *p, int from, int to, long in_bytes, long out_bytes,
                          int row_bytes) {
    if (!p) return;
    for (int t = from; t < to; t++)
        for (int b = 0; b < row_bytes; b += 64) {
            __builtin_prefetch(p->q + t * in_bytes + b);
            __builtin_prefetch(p->k + t * in_bytes + b);
            __builtin_prefetch(p->v + t * in_bytes + b);
            __builtin_prefetch(p->out + t * out_bytes + b, 1);
        }
}

/* ---- vector path ---------------------------------------------------------------------------
 * One pair, Lp = L and Dp = D rounded up to W:
 *
 *   kt [D][Lp]  K transposed: a query's scores against 16 keys are one vector FMA per dim
 *   vv [L][Dp]  V in float32
 *   qs [R][Dp]  R query rows, times scale * log2(e)
 *   s  [R][Lp]  their scores, then probabilities
 *
 * then out[i] = sum_t s[i][t] * vv[t] / sum_t s[i][t], R rows at a time (R x 2 vectors of
 * accumulators stay in registers). Padding rows/columns of the scratch are zero, so tiles
 * never read garbage; padding query rows are computed and not written.
 */

INLINE size_t vector_scratch_bytes(long Lp, long D) {
    const long Dp = (D + W - 1) / W * W;
    return (size_t)(D * Lp + Lp * Dp + R * Dp + R * Lp) * sizeof(float);
}

/* kt[d][t] = k[t][d] for t < L (zero for L <= t < Lp), d < D. */
INLINE void load_kt(const void *k, long stride, int L, int Lp, int D, float *kt, int bf16) {
    for (int t0 = 0; t0 < Lp; t0 += W) {
        for (int d0 = 0; d0 < D; d0 += W) {
            const int n = D - d0 < W ? D - d0 : W;
            vi t[W];
            for (int i = 0; i < W; i++)
                t[i] = t0 + i < L ? (vi)load_in(k, (long)(t0 + i) * stride + d0, n, bf16) : (vi){0};
            transpose16(t);
            for (int j = 0; j < n; j++) store(kt + (long)(d0 + j) * Lp + t0, (vf)t[j]);
        }
    }
}

/* R rows of scores from the query rows qs: s[r][j] = qs[r] . kt[:, j]. */
INLINE void scores(const float *qs, const float *kt, float *s, int D, int Dp, int Lp) {
    int j = 0;
    for (; j + 2 * W <= Lp; j += 2 * W) {
        vf a[R][2] = {{{0}}};
        for (int d = 0; d < D; d++) {
            const vf k0 = load(kt + (long)d * Lp + j), k1 = load(kt + (long)d * Lp + j + W);
            for (int r = 0; r < R; r++) {
                const float q = qs[r * Dp + d];
                a[r][0] += q * k0;
                a[r][1] += q * k1;
            }
        }
        for (int r = 0; r < R; r++) {
            store(s + (long)r * Lp + j, a[r][0]);
            store(s + (long)r * Lp + j + W, a[r][1]);
        }
    }
    if (j < Lp) {
        vf a[R] = {{0}};
        for (int d = 0; d < D; d++) {
            const vf k0 = load(kt + (long)d * Lp + j);
            for (int r = 0; r < R; r++) a[r] += qs[r * Dp + d] * k0;
        }
        for (int r = 0; r < R; r++) store(s + (long)r * Lp + j, a[r]);
    }
}

/* Rows 0 .. rows - 1 of out (from off): s . vv, times inv, two vectors of columns at a time. */
INLINE void weighted_values(const float *s, const float *vv, const float *inv, int L, int Lp,
                            int Dp, int D, int rows, void *out, long off, long out_stride,
                            int bf16) {
    int c = 0;
    for (; c + 2 * W <= Dp; c += 2 * W) {
        vf a[R][2] = {{{0}}};
        for (int t = 0; t < L; t++) {
            const vf v0 = load(vv + (long)t * Dp + c), v1 = load(vv + (long)t * Dp + c + W);
            for (int r = 0; r < R; r++) {
                const float p = s[(long)r * Lp + t];
                a[r][0] += p * v0;
                a[r][1] += p * v1;
            }
        }
        const int n1 = D - c - W < W ? D - c - W : W;
        for (int r = 0; r < rows; r++) {
            store_out(out, off + r * out_stride + c, a[r][0] * inv[r], W, bf16);
            store_out(out, off + r * out_stride + c + W, a[r][1] * inv[r], n1, bf16);
        }
    }
    if (c < Dp) {
        vf a[R] = {{0}};
        for (int t = 0; t < L; t++) {
            const vf v0 = load(vv + (long)t * Dp + c);
            for (int r = 0; r < R; r++) a[r] += s[(long)r * Lp + t] * v0;
        }
        const int n0 = D - c < W ? D - c : W;
        for (int r = 0; r < rows; r++)
            store_out(out, off + r * out_stride + c, a[r] * inv[r], n0, bf16);
    }
}

INLINE void attend_vector(const pair_t *p, const pair_t *next, long in_stride, long out_stride,
                          int D, float qscale, float *scratch, int bf16) {
    const int L = p->L, Lp = (L + W - 1) / W * W, Dp = (D + W - 1) / W * W;
    const int esize = bf16 ? 2 : 4, blocks = (L + R - 1) / R;
    float *kt = scratch, *vv = kt + (long)D * Lp, *qs = vv + (long)L * Dp, *s = qs + R * Dp;
    load_kt(p->k, in_stride, L, Lp, D, kt, bf16);
    for (int t = 0; t < L; t++)
        for (int d0 = 0; d0 < Dp; d0 += W) {
            const int n = D - d0 < W ? D - d0 : W;
            store(vv + (long)t * Dp + d0, load_in(p->v, (long)t * in_stride + d0, n, bf16));
        }
    for (int b = 0; b < blocks; b++) {
        const int i0 = b * R, rows = L - i0 < R ? L - i0 : R;
        if (next)
            prefetch_rows(next, b * next->L / blocks, (b + 1) * next->L / blocks,
                          in_stride * esize, out_stride * esize, D * esize);
        for (int r = 0; r < R; r++)
            for (int d0 = 0; d0 < Dp; d0 += W) {
                const int n = D - d0 < W ? D - d0 : W;
                const vf x =
                    r < rows ? load_in(p->q, (long)(i0 + r) * in_stride + d0, n, bf16) : (vf){0};
                store(qs + r * Dp + d0, x * qscale);
            }
        scores(qs, kt, s, D, Dp, Lp);
        float inv[W];
        softmax_rows(s, s, Lp, R, L, Lp, 1.f, inv, 0);
        weighted_values(s, vv, inv, L, Lp, Dp, D, rows, p->out, (long)i0 * out_stride,
                        out_stride, bf16);
    }
}

/* ---- AMX path ------------------------------------------------------------------------------
 * Both products are tile multiplies, TDPBF16PS: C[16 x 16 f32] += A[16 x 32 bf16] .
 * B[16 x 16 pairs of bf16], every tile 16 rows of 64 bytes (one configuration throughout):
 *
 *   scores  C = Q[16 queries x 32 dims] . KT[16 dim pairs x 16 keys], summed over D / 32
 *   output  C = P[16 queries x 32 keys] . VI[16 key pairs x 16 dims], summed over Lpp / 32
 *
 * KT rows are K's 32-bit words (dim pairs) transposed; VI rows interleave two V rows. Tiles
 * that one multiply reads are never reloaded by the next (tile registers are not renamed).
 * Scratch, bf16 unless said (Lp, Lpp = L rounded up to 16, 32):
 *
 *   kt [Lp / 16][D / 32] tiles   vi [Lpp / 32][D / 16] tiles   qb [16][D]   pb [16][Lpp]
 *   s  [16][Lp] f32 scores       ob [16][32] f32 output columns d0 .. d0 + 31
 */
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define HAVE_AMX 1
#define TILE 512 /* bf16 elements in a tile */

typedef uint16_t vw __attribute__((vector_size(64)));

/* Linux hands out the AMX register state only on request, once per process. */
static int amx_permitted(void) {
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}

INLINE void amx_configure(void) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg = {.palette = 1};
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
}

INLINE vw load_w(const uint16_t *p) {
    vw v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE size_t amx_scratch_bytes(long Lp, long D) {
    const long Lpp = (Lp + 31) / 32 * 32;
    return (size_t)(Lp * D + Lpp * D + 16 * D + 16 * Lpp) * 2 + (16 * Lp + 16 * 32) * 4;
}

/* kt tiles: 16 keys' rows of 32 dims, transposed as 32-bit words (dim pairs). */
INLINE void amx_load_kt(const uint16_t *k, long in_stride, int L, int Lp, int D, uint16_t *kt) {
    for (int n0 = 0; n0 < Lp; n0 += 16)
        for (int d0 = 0; d0 < D; d0 += 32) {
            vi t[W];
            for (int i = 0; i < W; i++)
                t[i] = n0 + i < L ? (vi)load_w(k + (long)(n0 + i) * in_stride + d0) : (vi){0};
            transpose16(t);
            uint16_t *tile = kt + ((long)n0 / 16 * (D / 32) + d0 / 32) * TILE;
            for (int i = 0; i < W; i++) memcpy(tile + i * 32, &t[i], 64);
        }
}

/* vi tiles: row p of the tile for keys t0 .. t0 + 31 and dims d0 .. d0 + 15 interleaves
 * V[t0 + 2p][d0 ..] and V[t0 + 2p + 1][d0 ..]. */
INLINE void amx_load_vi(const uint16_t *v, long in_stride, int L, int Lpp, int D, uint16_t *vi_) {
    for (int t0 = 0; t0 < Lpp; t0 += 32)
        for (int p = 0; p < 16; p++) {
            const int ta = t0 + 2 * p, tb = ta + 1;
            for (int d0 = 0; d0 < D; d0 += 32) {
                const vw a = ta < L ? load_w(v + (long)ta * in_stride + d0) : (vw){0};
                const vw b = tb < L ? load_w(v + (long)tb * in_stride + d0) : (vw){0};
                const vw lo = __builtin_shuffle(a, b, (vw){0,  32, 1,  33, 2,  34, 3,  35,
                                                           4,  36, 5,  37, 6,  38, 7,  39,
                                                           8,  40, 9,  41, 10, 42, 11, 43,
                                                           12, 44, 13, 45, 14, 46, 15, 47});
                const vw hi = __builtin_shuffle(a, b, (vw){16, 48, 17, 49, 18, 50, 19, 51,
                                                           20, 52, 21, 53, 22, 54, 23, 55,
                                                           24, 56, 25, 57, 26, 58, 27, 59,
                                                           28, 60, 29, 61, 30, 62, 31, 63});
                uint16_t *tile = vi_ + ((long)t0 / 32 * (D / 16) + d0 / 16) * TILE + p * 32;
                memcpy(tile, &lo, 64);
                memcpy(tile + TILE, &hi, 64);
            }
        }
}

/* Scores of the 16 queries in qb against all keys: tmm0/1 accumulate two key blocks, tmm2
 * holds Q, tmm3/4 the K tiles. */
INLINE void amx_scores(const uint16_t *qb, const uint16_t *kt, float *s, int Lp, int D) {
    for (int n0 = 0; n0 < Lp; n0 += 32) {
        const int two = n0 + 16 < Lp;
        _tile_zero(0);
        _tile_zero(1);
        for (int d0 = 0; d0 < D; d0 += 32) {
            const uint16_t *tile = kt + ((long)n0 / 16 * (D / 32) + d0 / 32) * TILE;
            _tile_loadd(2, qb + d0, D * 2);
            _tile_loadd(3, tile, 64);
            _tile_dpbf16ps(0, 2, 3);
            if (two) {
                _tile_loadd(4, tile + (D / 32) * TILE, 64);
                _tile_dpbf16ps(1, 2, 4);
            }
        }
        _tile_stored(0, s + n0, Lp * 4);
        if (two) _tile_stored(1, s + n0 + 16, Lp * 4);
    }
}

/* One 32-key step of P . V into tmm5/6 (dims d0 .. d0 + 15, d0 + 16 .. d0 + 31). */
#define PV_STEP(tp, tv0, tv1, t0)                                                   \
    do {                                                                            \
        const uint16_t *tile = vi_ + ((long)(t0) / 32 * (D / 16) + d0 / 16) * TILE; \
        _tile_loadd(tp, pb + (t0), Lpp * 2);                                        \
        _tile_loadd(tv0, tile, 64);                                                 \
        _tile_dpbf16ps(5, tp, tv0);                                                 \
        _tile_loadd(tv1, tile + TILE, 64);                                          \
        _tile_dpbf16ps(6, tp, tv1);                                                 \
    } while (0)

INLINE void attend_amx(const pair_t *p, const pair_t *next, long in_stride, long out_stride,
                       int D, float qscale, float *scratch) {
    const int L = p->L, Lp = (L + 15) / 16 * 16, Lpp = (L + 31) / 32 * 32;
    const int blocks = (L + 15) / 16;
    uint16_t *kt = (uint16_t *)scratch, *vi_ = kt + (long)Lp * D, *qb = vi_ + (long)Lpp * D,
             *pb = qb + 16 * D;
    float *s = (float *)(pb + 16 * Lpp), *ob = s + 16 * Lp; /* all 64-byte aligned */
    const uint16_t *q = (const uint16_t *)p->q;
    amx_load_kt((const uint16_t *)p->k, in_stride, L, Lp, D, kt);
    amx_load_vi((const uint16_t *)p->v, in_stride, L, Lpp, D, vi_);
    for (int b = 0; b < blocks; b++) {
        const int i0 = b * 16, rows = L - i0 < 16 ? L - i0 : 16;
        if (next)
            prefetch_rows(next, b * next->L / blocks, (b + 1) * next->L / blocks, in_stride * 2,
                          out_stride * 2, D * 2);
        for (int r = 0; r < 16; r++) {
            if (r < rows)
                memcpy(qb + r * D, q + (long)(i0 + r) * in_stride, (size_t)D * 2);
            else
                memset(qb + r * D, 0, (size_t)D * 2);
        }
        amx_scores(qb, kt, s, Lp, D);
        float inv[W];
        softmax_rows(s, pb, Lpp, rows, L, Lp, qscale, inv, 1);
        for (int r = 0; r < 16; r++) {
            uint16_t *pr = pb + (long)r * Lpp;
            if (r >= rows) /* a padding query: its output is dropped, any finite P will do */
                memset(pr, 0, (size_t)Lp * 2);
            if (Lpp > Lp) memset(pr + Lp, 0, (size_t)(Lpp - Lp) * 2);
        }
        for (int d0 = 0; d0 < D; d0 += 32) {
            _tile_zero(5);
            _tile_zero(6);
            for (int t0 = 0; t0 < Lpp; t0 += 64) {
                PV_STEP(7, 3, 4, t0);
                if (t0 + 32 < Lpp) PV_STEP(2, 0, 1, t0 + 32);
            }
            _tile_stored(5, ob, 128);
            _tile_stored(6, ob + 16, 128);
            for (int r = 0; r < rows; r++) {
                const long off = (long)(i0 + r) * out_stride + d0;
                store_out(p->out, off, load(ob + r * 32) * inv[r], W, 1);
                store_out(p->out, off + W, load(ob + r * 32 + W) * inv[r], W, 1);
            }
        }
    }
}
#else
#define HAVE_AMX 0
static int amx_permitted(void) { return 0; }
INLINE void amx_configure(void) {}
INLINE size_t amx_scratch_bytes(long Lp, long D) { return 0 * Lp * D; }
INLINE void attend_amx(const pair_t *p, const pair_t *next, long in_stride, long out_stride,
                       int D, float qscale, float *scratch) {}
#endif

/* ---- entry points ------------------------------------------------------------------------ */

INLINE pair_t pair_at(const char *q, const char *k, const char *v, char *out, long in_bytes,
                      long out_bytes, const int32_t *cu_seqlens, int H, int head_bytes, long it) {
    const long seq = it / H, h = it % H, row = cu_seqlens[seq];
    const long in_off = row * in_bytes + h * head_bytes;
    return (pair_t){q + in_off, k + in_off, v + in_off, out + row * out_bytes + h * head_bytes,
                    cu_seqlens[seq + 1] - cu_seqlens[seq]};
}

INLINE void attention(const void *q, const void *k, const void *v, long in_stride, void *out,
                      long out_stride, const int32_t *cu_seqlens, int num_seqs, int H, int D,
                      float scale, int num_threads, int bf16, int amx) {
    int max_len = 0;
    for (int i = 0; i < num_seqs; i++) {
        const int L = cu_seqlens[i + 1] - cu_seqlens[i];
        max_len = L > max_len ? L : max_len;
    }
    const long Lp = (max_len + W - 1) / W * W;
    size_t bytes = amx ? amx_scratch_bytes(Lp, D) : vector_scratch_bytes(Lp, D);
    bytes = (bytes + 63) / 64 * 64;
    const long items = (long)num_seqs * H, esize = bf16 ? 2 : 4;
    const long in_bytes = in_stride * esize, out_bytes = out_stride * esize;
    const int head_bytes = D * esize;
    const float qscale = scale * 1.4426950408889634f; /* log2(e): softmax in base 2 */
#pragma omp parallel num_threads(num_threads)
    {
        float *scratch = aligned_alloc(64, bytes);
        int team = 1;
#ifdef _OPENMP
        team = omp_get_num_threads();
#endif
        if (amx) amx_configure();
#pragma omp for schedule(static, 1)
        for (long it = 0; it < items; it++) {
            const pair_t p = pair_at(q, k, v, out, in_bytes, out_bytes, cu_seqlens, H,
                                     head_bytes, it);
            const pair_t nx = pair_at(q, k, v, out, in_bytes, out_bytes, cu_seqlens, H,
                                      head_bytes, it + team < items ? it + team : it);
            const pair_t *next = it + team < items ? &nx : NULL;
            if (p.L == 0) continue;
            if (amx)
                attend_amx(&p, next, in_stride, out_stride, D, qscale, scratch);
            else
                attend_vector(&p, next, in_stride, out_stride, D, qscale, scratch, bf16);
        }
#if HAVE_AMX
        if (amx) _tile_release(); /* back to the initial state other AMX users expect */
#endif
        free(scratch);
    }
}

void encoder_attention_f32(const float *q, const float *k, const float *v, long in_stride,
                           float *out, long out_stride, const int32_t *cu_seqlens, int num_seqs,
                           int H, int D, float scale, int num_threads) {
    attention(q, k, v, in_stride, out, out_stride, cu_seqlens, num_seqs, H, D, scale,
              num_threads, 0, 0);
}

/* allow_amx = 0 forces the vector path (for tests and comparisons). */
void encoder_attention_bf16(const uint16_t *q, const uint16_t *k, const uint16_t *v,
                            long in_stride, uint16_t *out, long out_stride,
                            const int32_t *cu_seqlens, int num_seqs, int H, int D, float scale,
                            int num_threads, int allow_amx) {
    static int permitted = -1; /* asked once, from the caller's thread before any region */
    const int fits = allow_amx && HAVE_AMX && D % 32 == 0;
    if (fits && permitted < 0) permitted = amx_permitted();
    attention(q, k, v, in_stride, out, out_stride, cu_seqlens, num_seqs, H, D, scale,
              num_threads, 1, fits && permitted > 0);
}
