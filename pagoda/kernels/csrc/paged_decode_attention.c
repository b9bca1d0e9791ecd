/* Paged decode attention for the CPU, float32: one query token per request, read straight
 * from the block-paged KV cache (no gather copy).
 *
 * Layout: q, out [B, H, D]; k_cache, v_cache [num_blocks, block_size, KVH, D];
 * block_tables [B, max_blocks] (int32); seq_lens [B] (int32). Query head h reads KV head
 * h / (H / KVH). Requests are spread over num_threads OpenMP threads. Built with -fopenmp
 * in a process that has loaded torch, this binds to torch's already-loaded libgomp (same
 * soname), so torch's worker pool runs it instead of a second pool fighting for the cores.
 * scratch_all holds num_threads slices of scratch_stride >= H * max_len floats.
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <string.h>

static float dot(const float *a, const float *b, int n) {
    float s = 0.f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void paged_decode_attention_f32(const float *q, const float *k_cache, const float *v_cache,
                                const int32_t *block_tables, const int32_t *seq_lens, float *out,
                                int H, int KVH, int D, int block_size, int max_blocks,
                                float scale, int batch, int num_threads, long scratch_stride,
                                float *scratch_all) {
    const int G = H / KVH;
    const long token_stride = (long)KVH * D;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int b = 0; b < batch; b++) {
#ifdef _OPENMP
        float *scratch = scratch_all + (long)omp_get_thread_num() * scratch_stride;
#else
        float *scratch = scratch_all;
#endif
        const int L = seq_lens[b];
        const int32_t *table = block_tables + (long)b * max_blocks;
        const float *qb = q + (long)b * H * D;
        float *ob = out + (long)b * H * D;
        /* pass 1: scores[h][t] = q_h . k_t[h / G] * scale; each token's K row (all KV heads,
         * contiguous) is read once. */
        for (int t = 0; t < L; t++) {
            const long slot = (long)table[t / block_size] * block_size + t % block_size;
            const float *k = k_cache + slot * token_stride;
            for (int h = 0; h < H; h++) scratch[(long)h * L + t] = dot(qb + (long)h * D, k + (long)(h / G) * D, D) * scale;
        }
        /* softmax per query head */
        for (int h = 0; h < H; h++) {
            float *s = scratch + (long)h * L;
            float m = -INFINITY;
            for (int t = 0; t < L; t++) m = s[t] > m ? s[t] : m;
            float sum = 0.f;
            for (int t = 0; t < L; t++) {
                s[t] = expf(s[t] - m);
                sum += s[t];
            }
            const float inv = 1.f / sum;
            for (int t = 0; t < L; t++) s[t] *= inv;
        }
        /* pass 2: out_h = sum_t p_h[t] v_t[h / G]; each V row read once. */
        memset(ob, 0, sizeof(float) * H * D);
        for (int t = 0; t < L; t++) {
            const long slot = (long)table[t / block_size] * block_size + t % block_size;
            const float *v = v_cache + slot * token_stride;
            for (int h = 0; h < H; h++) {
                const float p = scratch[(long)h * L + t];
                const float *vh = v + (long)(h / G) * D;
                float *o = ob + (long)h * D;
                for (int i = 0; i < D; i++) o[i] += p * vh[i];
            }
        }
    }
}
