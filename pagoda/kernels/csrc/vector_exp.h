/* 16-float vectors (GCC/Clang vector extensions: load, store, blend) and a vectorised exp,
 * shared by the C kernels of this directory (SiLU and the decode softmax use the exp, the
 * encoder attention the vector helpers). pagoda/kernels/c_library.py builds each source with
 * this header beside it and keys its cache on it too. */
#ifndef PAGODA_VECTOR_EXP_H
#define PAGODA_VECTOR_EXP_H

#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));

INLINE vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

INLINE vf blend(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* exp(x), Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so r is exact
 * to float32), a degree-7 polynomial for exp(r) (about 1 ulp), times 2^n built in the
 * exponent bits. Below -87.3 it returns exp(-87.3) (about 1e-38); from about 88.4 +inf. */
INLINE vf exp_v(vf x) {
    x = blend(x < -87.3f, (vf){0} - 87.3f, x);
    x = blend(x > 89.f, (vf){0} + 89.f, x);
    const vf fx = x * 1.44269504088896341f;
    /* fx + 127.5 > 0, so truncation is floor: the biased exponent of round(fx). */
    const vi biased = __builtin_convertvector(fx + 127.5f, vi);
    const vf n = __builtin_convertvector(biased, vf) - 127.f;
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = (vf){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.f;
    return p * (vf)(biased << 23);
}

#endif
