/* Antialiased bilinear resize with Pillow's arithmetic.
   Separable triangle filter stretched by the downscale factor, 22-bit fixed-point weights,
   horizontal pass over the rows the vertical pass needs, then the vertical pass, rounding to
   uint8 after each: the same arithmetic as Pillow's Image.resize(BILINEAR, box=...,
   reducing_gap=None) in Pillow 13, so results are bit-identical to it (tests compare), minus the
   RGB<->RGBX copies a PIL image costs. Box coordinates are floats, as Pillow receives them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jdct.h"

#define JD_RS_BITS 22

/* Output sample i reads n[i] inputs from first[i] with weights w[i*ksize + t] (zero beyond n[i]).
   Returns ksize, or 0 when out of memory. */
static int jd_rs_weights(int in_size, float in0, float in1, int out_size,
                         int **first, int **n, int32_t **w) {
    double scale = (double)(in1 - in0) / out_size;
    double fscale = scale < 1.0 ? 1.0 : scale;  /* the filter widens only when shrinking */
    double support = fscale, inv = 1.0 / fscale;
    int ksize = (int)ceil(support) * 2 + 1, i, t;
    double *tmp = (double *)malloc(sizeof(double) * ksize);
    *first = (int *)malloc(sizeof(int) * out_size);
    *n = (int *)malloc(sizeof(int) * out_size);
    *w = (int32_t *)malloc(sizeof(int32_t) * (size_t)out_size * ksize);
    if (tmp == NULL || *first == NULL || *n == NULL || *w == NULL) {
        free(tmp);
        return 0;
    }
    for (i = 0; i < out_size; i++) {
        double center = in0 + (i + 0.5) * scale, sum = 0.0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        for (t = 0; t < hi - lo; t++) {
            double d = fabs((t + lo - center + 0.5) * inv);
            tmp[t] = d < 1.0 ? 1.0 - d : 0.0;
            sum += tmp[t];
        }
        for (t = 0; t < ksize; t++) {
            double v = t < hi - lo ? (sum != 0.0 ? tmp[t] / sum : tmp[t]) : 0.0;
            (*w)[(size_t)i * ksize + t] = (int32_t)(v < 0 ? -0.5 + v * (1 << JD_RS_BITS)
                                                          : 0.5 + v * (1 << JD_RS_BITS));
        }
        (*first)[i] = lo;
        (*n)[i] = hi - lo;
    }
    free(tmp);
    return ksize;
}

JD_INLINE uint8_t jd_rs_clip(int32_t v) {
    v >>= JD_RS_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Horizontal pass: nrows rows of src (stride sstride bytes) into dst (dw pixels a row);
   output pixel i reads n[i] pixels from column first[i] - c0. */
static void jd_rs_h(const uint8_t *src, size_t sstride, int c0, int nrows, uint8_t *dst,
                    int dw, const int *first, const int *n, const int32_t *w, int k) {
    int r, i, t;
    for (r = 0; r < nrows; r++) {
        const uint8_t *in = src + (size_t)r * sstride;
        uint8_t *out = dst + (size_t)r * dw * 3;
        for (i = 0; i < dw; i++) {
            const uint8_t *p = in + (size_t)(first[i] - c0) * 3;
            const int32_t *kk = w + (size_t)i * k;
            int32_t a = 1 << (JD_RS_BITS - 1), b = a, c = a;
            for (t = 0; t < n[i]; t++) {
                a += p[3 * t] * kk[t];
                b += p[3 * t + 1] * kk[t];
                c += p[3 * t + 2] * kk[t];
            }
            out[3 * i] = jd_rs_clip(a);
            out[3 * i + 1] = jd_rs_clip(b);
            out[3 * i + 2] = jd_rs_clip(c);
        }
    }
}

/* Vertical pass: output row i = sum over t of source row (first[i] - r0 + t), each row
   rowlen bytes at src + row * sstride. Whole rows are accumulated at once: the inner loop
   runs over contiguous bytes, which the compiler vectorizes. acc: rowlen int32 scratch. */
JD_INLINE void jd_rs_vpass(const uint8_t *src, size_t sstride, int r0, size_t rowlen, uint8_t *dst,
                           int dh, const int *first, const int *n, const int32_t *w, int k,
                           int32_t *acc) {
    int i, t;
    size_t j;
    for (i = 0; i < dh; i++) {
        const int32_t *kk = w + (size_t)i * k;
        uint8_t *out = dst + (size_t)i * rowlen;
        for (j = 0; j < rowlen; j++) acc[j] = 1 << (JD_RS_BITS - 1);
        for (t = 0; t < n[i]; t++) {
            const uint8_t *in = src + (size_t)(first[i] - r0 + t) * sstride;
            int32_t kt = kk[t];
            for (j = 0; j < rowlen; j++) acc[j] += in[j] * kt;
        }
        for (j = 0; j < rowlen; j++) out[j] = jd_rs_clip(acc[j]);
    }
}

/* src: sh x sw x 3 (row stride sw*3); dst: dh x dw x 3. Pillow 13's pass order: vertical
   first when the height shrinks by more than twice as many pixels as the width, else
   horizontal first; each pass rounds to uint8, so the order is part of the result. Only
   the rows (columns) the second pass reads are computed by the first. Returns -1 when out
   of memory. */
JD_CLONES
int jd_resize_bilinear(const uint8_t *src, int sw, int sh, float x0, float y0,
                              float x1, float y1, uint8_t *dst, int dw, int dh) {
    int *hf = NULL, *hn = NULL, *vf = NULL, *vn = NULL, kh = 0, kv = 0, lo, hi;
    int32_t *hw = NULL, *vw = NULL, *acc = NULL;
    uint8_t *tmp = NULL;
    size_t sstride = (size_t)sw * 3;
    int need_h = dw != sw || x0 != 0 || x1 != dw, need_v = dh != sh || y0 != 0 || y1 != dh;
    int h_first = !((sh - dh) > 0 && (sh - dh) > (sw - dw) * 2);
    int rc = -1;
    if (need_h && (kh = jd_rs_weights(sw, x0, x1, dw, &hf, &hn, &hw)) == 0) goto done;
    if (need_v && (kv = jd_rs_weights(sh, y0, y1, dh, &vf, &vn, &vw)) == 0) goto done;
    if (need_h && need_v && h_first) {
        lo = vf[0]; hi = vf[dh - 1] + vn[dh - 1];
        tmp = (uint8_t *)malloc((size_t)(hi - lo) * dw * 3);
        acc = (int32_t *)malloc(sizeof(int32_t) * dw * 3);
        if (tmp == NULL || acc == NULL) goto done;
        jd_rs_h(src + lo * sstride, sstride, 0, hi - lo, tmp, dw, hf, hn, hw, kh);
        jd_rs_vpass(tmp, (size_t)dw * 3, lo, (size_t)dw * 3, dst, dh, vf, vn, vw, kv, acc);
    } else if (need_h && need_v) {
        lo = hf[0]; hi = hf[dw - 1] + hn[dw - 1];
        tmp = (uint8_t *)malloc((size_t)dh * (hi - lo) * 3);
        acc = (int32_t *)malloc(sizeof(int32_t) * (hi - lo) * 3);
        if (tmp == NULL || acc == NULL) goto done;
        jd_rs_vpass(src + (size_t)lo * 3, sstride, 0, (size_t)(hi - lo) * 3, tmp, dh, vf, vn, vw, kv, acc);
        jd_rs_h(tmp, (size_t)(hi - lo) * 3, lo, dh, dst, dw, hf, hn, hw, kh);
    } else if (need_h) {
        jd_rs_h(src, sstride, 0, dh, dst, dw, hf, hn, hw, kh);
    } else if (need_v) {
        acc = (int32_t *)malloc(sizeof(int32_t) * sstride);
        if (acc == NULL) goto done;
        jd_rs_vpass(src, sstride, 0, sstride, dst, dh, vf, vn, vw, kv, acc);
    } else {
        memcpy(dst, src, (size_t)dh * sstride);
    }
    rc = 0;
done:
    free(hf); free(hn); free(hw); free(vf); free(vn); free(vw); free(acc); free(tmp);
    return rc;
}
