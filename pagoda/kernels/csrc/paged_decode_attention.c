/* Paged decode attention for the CPU, float32: one query token per request, read straight
 * from the block-paged KV cache (no gather copy).
 *
 * Layout: q, out [B, H, D]; k_cache, v_cache [num_blocks, block_size, KVH, D];
 * block_tables [B, max_blocks] (int32); seq_lens [B] (int32). Query head h reads KV head
 * h / (H / KVH); the G query heads of one KV head share its K and V rows. Work is spread over
 * num_threads OpenMP threads by request, its KV heads one after the other: the first head's
 * pass brings the request's blocks into L2, where the next heads find them (one task per
 * (request, KV head) would read each block from memory once per KV head). Batches too small
 * to keep the threads busy that way are spread by (request, KV head). Built with -fopenmp in
 * a process that has loaded torch, this binds to torch's already-loaded libgomp (same
 * soname), so torch's worker pool runs it instead of a second pool fighting for the cores.
 * scratch_all holds num_threads slices of scratch_stride >= H * max_len floats.
 *
 * With AVX-512 and D = 64 or 128 the scores of 16 tokens are reduced together (one transpose
 * tree instead of a horizontal sum per token and head), the softmax runs 16 scores at a time
 * (libm's scalar expf was 13% of the kernel at batch 36), and the query heads of a KV head
 * (up to 16 / (D / 16) of them) share one pass over V, their outputs in registers over the
 * whole context; otherwise plain loops (the compiler vectorises them).
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "vector_exp.h"

/* The slots of a request's tokens in order, without a division per token; only the table
 * entries of blocks that hold tokens are read. */
typedef struct {
    const int32_t *table;
    int block_size, offset;
} slot_walk;

INLINE slot_walk walk_start(const int32_t *table, int block_size) {
    slot_walk w = {table, block_size, 0};
    return w;
}

INLINE long walk_next(slot_walk *w) {
    if (w->offset == w->block_size) {
        w->offset = 0;
        w->table++;
    }
    return (long)*w->table * w->block_size + w->offset++;
}

#ifdef __AVX512F__
/* Prefetch token t's row of one KV head into L1, PREFETCH_AHEAD tokens before it is read:
 * blocks are scattered, so the hardware prefetcher restarts at every block. */
#define PREFETCH_AHEAD 16
INLINE void prefetch_row(const float *cache, const int32_t *table, int t, int block_size,
                         long token_stride, int kvh, int D) {
    const float *row = cache + ((long)table[t / block_size] * block_size + t % block_size) *
                                   token_stride + (long)kvh * D;
    for (int c = 0; c < D; c += 16) _mm_prefetch((const char *)(row + c), _MM_HINT_T0);
}
#endif

/* softmax of s[0:L] in place, unnormalised; returns 1 / sum */
INLINE float softmax_unnormalised(float *s, int L) {
    float m = -INFINITY;
    for (int t = 0; t < L; t++) m = s[t] > m ? s[t] : m;
    float sum = 0.f;
    for (int t = 0; t < L; t++) {
        s[t] = expf(s[t] - m);
        sum += s[t];
    }
    return 1.f / sum;
}

static void attend_generic(const float *qh, const float *k_cache, const float *v_cache,
                           const int32_t *table, int L, int G, int D, int block_size,
                           long token_stride, int kvh, float scale, float *scores, float *oh) {
    slot_walk kw = walk_start(table, block_size);
    for (int t = 0; t < L; t++) {
        const float *k = k_cache + walk_next(&kw) * token_stride + (long)kvh * D;
        for (int g = 0; g < G; g++) {
            float s = 0.f;
            for (int i = 0; i < D; i++) s += qh[(long)g * D + i] * k[i];
            scores[(long)g * L + t] = s * scale;
        }
    }
    for (int g = 0; g < G; g++) {
        float *s = scores + (long)g * L;
        const float inv = softmax_unnormalised(s, L);
        float *o = oh + (long)g * D;
        memset(o, 0, sizeof(float) * D);
        slot_walk vw = walk_start(table, block_size);
        for (int t = 0; t < L; t++) {
            const float *v = v_cache + walk_next(&vw) * token_stride + (long)kvh * D;
            for (int i = 0; i < D; i++) o[i] += s[t] * v[i];
        }
        for (int i = 0; i < D; i++) o[i] *= inv;
    }
}

#ifdef __AVX512F__
/* softmax_unnormalised, 16 scores at a time */
INLINE float softmax_avx512(float *s, int L) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int t = 0; t < L; t += 16) {
        const __mmask16 k = t + 16 <= L ? 0xFFFF : (__mmask16)((1u << (L - t)) - 1u);
        m = _mm512_max_ps(m, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, s + t));
    }
    const __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    __m512 sum = _mm512_setzero_ps();
    for (int t = 0; t < L; t += 16) {
        const __mmask16 k = t + 16 <= L ? 0xFFFF : (__mmask16)((1u << (L - t)) - 1u);
        const __m512 e = (__m512)exp_v((vf)_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + t), vm));
        _mm512_mask_storeu_ps(s + t, k, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
    }
    return 1.f / _mm512_reduce_add_ps(sum);
}

/* lane j of the result = sum of the lanes of v[j] */
INLINE __m512 reduce16(__m512 v[16]) {
    __m512 a[8], b[4], c[2];
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++)
        b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 2; i++)
        c[i] = _mm512_add_ps(
            _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
            _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* C = D / 16 vectors per row, a compile-time constant at each call site */
INLINE void attend_avx512(const float *qh, const float *k_cache, const float *v_cache,
                          const int32_t *table, int L, int G, const int C, int block_size,
                          long token_stride, int kvh, float scale, float *scores, float *oh) {
    const int D = 16 * C;
    const __m512 vscale = _mm512_set1_ps(scale);
    slot_walk kw = walk_start(table, block_size);
    for (int t0 = 0; t0 < L; t0 += 16) {
        const int n = L - t0 < 16 ? L - t0 : 16;
        const float *k[16];
        for (int j = 0; j < n; j++) k[j] = k_cache + walk_next(&kw) * token_stride + (long)kvh * D;
        for (int t = t0 + PREFETCH_AHEAD; t < t0 + PREFETCH_AHEAD + 16 && t < L; t++)
            prefetch_row(k_cache, table, t, block_size, token_stride, kvh, D);
        for (int g = 0; g < G; g++) {
            __m512 q[8], part[16];
            for (int c = 0; c < C; c++) q[c] = _mm512_loadu_ps(qh + (long)g * D + 16 * c);
            for (int j = 0; j < 16; j++) {
                __m512 acc = _mm512_setzero_ps();
                if (j < n)
                    for (int c = 0; c < C; c++)
                        acc = _mm512_fmadd_ps(q[c], _mm512_loadu_ps(k[j] + 16 * c), acc);
                part[j] = acc;
            }
            const __mmask16 mask = (__mmask16)((1u << n) - 1u);
            _mm512_mask_storeu_ps(scores + (long)g * L + t0, mask,
                                  _mm512_mul_ps(reduce16(part), vscale));
        }
    }
    /* V: one pass per group of up to 16 / C query heads (their outputs fill 16 registers) */
    const int GV = 16 / C;
    for (int g0 = 0; g0 < G; g0 += GV) {
        const int ng = G - g0 < GV ? G - g0 : GV;
        float inv[4]; /* ng <= GV <= 4: C is 4 or 8 (D = 64 or 128) */
        for (int g = 0; g < ng; g++) inv[g] = softmax_avx512(scores + (long)(g0 + g) * L, L);
        __m512 acc[16];
        for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
        slot_walk vw = walk_start(table, block_size);
        for (int t = 0; t < L; t++) {
            const float *v = v_cache + walk_next(&vw) * token_stride + (long)kvh * D;
            if (g0 == 0 && t + PREFETCH_AHEAD < L)
                prefetch_row(v_cache, table, t + PREFETCH_AHEAD, block_size, token_stride, kvh, D);
            __m512 vv[8];
            for (int c = 0; c < C; c++) vv[c] = _mm512_loadu_ps(v + 16 * c);
            for (int g = 0; g < GV; g++) {
                if (g < ng) {
                    const __m512 p = _mm512_set1_ps(scores[(long)(g0 + g) * L + t]);
                    for (int c = 0; c < C; c++)
                        acc[g * C + c] = _mm512_fmadd_ps(p, vv[c], acc[g * C + c]);
                }
            }
        }
        for (int g = 0; g < ng; g++) {
            const __m512 vinv = _mm512_set1_ps(inv[g]);
            for (int c = 0; c < C; c++)
                _mm512_storeu_ps(oh + (long)(g0 + g) * D + 16 * c,
                                 _mm512_mul_ps(acc[g * C + c], vinv));
        }
    }
}
#endif

void paged_decode_attention_f32(const float *q, const float *k_cache, const float *v_cache,
                                const int32_t *block_tables, const int32_t *seq_lens, float *out,
                                int H, int KVH, int D, int block_size, int max_blocks,
                                float scale, int batch, int num_threads, long scratch_stride,
                                float *scratch_all) {
    const int G = H / KVH;
    const long token_stride = (long)KVH * D;
    const int split = batch < 2 * num_threads ? KVH : 1; /* tasks per request */
    const int heads_per_task = KVH / split;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int task = 0; task < batch * split; task++) {
#ifdef _OPENMP
        float *scores = scratch_all + (long)omp_get_thread_num() * scratch_stride;
#else
        float *scores = scratch_all;
#endif
        const int b = task / split;
        const int L = seq_lens[b];
        const int32_t *table = block_tables + (long)b * max_blocks;
        const int first = task % split * heads_per_task;
        for (int kvh = first; kvh < first + heads_per_task; kvh++) {
            const float *qh = q + ((long)b * H + (long)kvh * G) * D;
            float *oh = out + ((long)b * H + (long)kvh * G) * D;
#ifdef __AVX512F__
            if (D == 64) {
                attend_avx512(qh, k_cache, v_cache, table, L, G, 4, block_size, token_stride,
                              kvh, scale, scores, oh);
                continue;
            }
            if (D == 128) {
                attend_avx512(qh, k_cache, v_cache, table, L, G, 8, block_size, token_stride,
                              kvh, scale, scores, oh);
                continue;
            }
#endif
            attend_generic(qh, k_cache, v_cache, table, L, G, D, block_size, token_stride, kvh,
                           scale, scores, oh);
        }
    }
}
