/* Paged decode attention for the CPU, float32: one query token per request, read straight
 * from the block-paged KV cache (no gather copy).
 *
 * Layout: q, out [B, H, D]; k_cache, v_cache [num_blocks, block_size, KVH, D];
 * block_tables [B, max_blocks] (int32); seq_lens [B] (int32). Query head h reads KV head
 * h / (H / KVH). Requests [b_start, b_end) are computed, so callers can split a batch over
 * threads. scratch holds at least (H / KVH) * max_len floats for this call.
 */
#include <math.h>
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
                                float scale, int b_start, int b_end, float *scratch) {
    const int G = H / KVH;
    const long token_stride = (long)KVH * D;
    for (int b = b_start; b < b_end; b++) {
        const int L = seq_lens[b];
        const int32_t *table = block_tables + (long)b * max_blocks;
        for (int g = 0; g < KVH; g++) {
            const float *qg = q + ((long)b * H + (long)g * G) * D;
            float *og = out + ((long)b * H + (long)g * G) * D;
            /* pass 1: scores[j][t] = q_j . k_t * scale */
            for (int t = 0; t < L; t++) {
                const long slot = (long)table[t / block_size] * block_size + t % block_size;
                const float *k = k_cache + slot * token_stride + (long)g * D;
                for (int j = 0; j < G; j++) scratch[(long)j * L + t] = dot(qg + j * D, k, D) * scale;
            }
            /* softmax per query head */
            for (int j = 0; j < G; j++) {
                float *s = scratch + (long)j * L;
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
            /* pass 2: out_j = sum_t p_j[t] v_t */
            memset(og, 0, sizeof(float) * G * D);
            for (int t = 0; t < L; t++) {
                const long slot = (long)table[t / block_size] * block_size + t % block_size;
                const float *v = v_cache + slot * token_stride + (long)g * D;
                for (int j = 0; j < G; j++) {
                    const float p = scratch[(long)j * L + t];
                    float *o = og + j * D;
                    for (int i = 0; i < D; i++) o[i] += p * v[i];
                }
            }
        }
    }
}
