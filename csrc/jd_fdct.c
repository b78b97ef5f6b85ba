/* The forward DCT of libjpeg-turbo's 4:2:0 islow encoder front end, without entropy coding.
   Written from the algorithms of jccolor.c, jcsample.c, jfdctint.c and jcdctmgr.c
   (libjpeg-turbo 2.1.5); tests check bit-identity with encode() + read_coefficients(). The
   quantization tables come from the caller (jdct_cli.jpegmath.quant in Python). */
#include <stdlib.h>

#include "jdct.h"

#define JD_SCALEBITS 16
#define JD_ONE_HALF ((int32_t)1 << (JD_SCALEBITS - 1))
#define JD_CBCR_OFFSET ((int32_t)128 << JD_SCALEBITS)
#define JD_FIX16(x) ((int32_t)((x) * (1L << JD_SCALEBITS) + 0.5))

/* jfdctint.c constants: CONST_BITS 13, PASS1_BITS 2, FIX(x) = round(x * 2^13). */
#define JD_CB 13
#define JD_P1 2
#define JD_DESCALE(x, n) (((x) + ((int32_t)1 << ((n) - 1))) >> (n))
/* One 1-D islow DCT pass over 8 lanes: in[k*8 + lane] holds sample k of lane `lane`; writes
   out[f*8 + lane], frequency f. pass1 (the row pass) keeps PASS1_BITS extra precision; the
   second (column) pass removes it and leaves jfdctint's overall factor of 8. */
JD_INLINE void jd_dct8_lanes(const int32_t *in, int32_t *out, const int pass1) {
    const int sh = pass1 ? JD_CB - JD_P1 : JD_CB + JD_P1;
    int i;
    for (i = 0; i < 8; i++) {
        int32_t t0 = in[i] + in[56 + i], t7 = in[i] - in[56 + i];
        int32_t t1 = in[8 + i] + in[48 + i], t6 = in[8 + i] - in[48 + i];
        int32_t t2 = in[16 + i] + in[40 + i], t5 = in[16 + i] - in[40 + i];
        int32_t t3 = in[24 + i] + in[32 + i], t4 = in[24 + i] - in[32 + i];
        int32_t t10 = t0 + t3, t13 = t0 - t3, t11 = t1 + t2, t12 = t1 - t2;
        int32_t z1, z2, z3, z4, z5;
        if (pass1) {
            out[i] = (t10 + t11) * (1 << JD_P1);
            out[32 + i] = (t10 - t11) * (1 << JD_P1);
        } else {
            out[i] = JD_DESCALE(t10 + t11, JD_P1);
            out[32 + i] = JD_DESCALE(t10 - t11, JD_P1);
        }
        z1 = (t12 + t13) * 4433;                               /* FIX(0.541196100) */
        out[16 + i] = JD_DESCALE(z1 + t13 * 6270, sh);          /* FIX(0.765366865) */
        out[48 + i] = JD_DESCALE(z1 - t12 * 15137, sh);         /* FIX(1.847759065) */
        z1 = t4 + t7; z2 = t5 + t6; z3 = t4 + t6; z4 = t5 + t7;
        z5 = (z3 + z4) * 9633;                                  /* FIX(1.175875602) */
        t4 *= 2446; t5 *= 16819; t6 *= 25172; t7 *= 12299;
        z1 *= -7373; z2 *= -20995; z3 *= -16069; z4 *= -3196;
        z3 += z5; z4 += z5;
        out[56 + i] = JD_DESCALE(t4 + z1 + z3, sh);
        out[40 + i] = JD_DESCALE(t5 + z2 + z4, sh);
        out[24 + i] = JD_DESCALE(t6 + z2 + z3, sh);
        out[8 + i] = JD_DESCALE(t7 + z1 + z4, sh);
    }
}

/* jcdctmgr.c quantizes by multiplying with a 16-bit reciprocal of (q << 3): a reciprocal, a
   rounding correction and a shift r per entry (compute_reciprocal). The SIMD quantizer used
   by the encoder applies the shift as ((a * recip) >> 16) * 2^(32 - r) >> 16, which equals
   (a * recip) >> r exactly (floor of floor) for r >= 16, always true here (q << 3 >= 8). */
/* floor(log2(v)) for v > 0 */
static int jd_floor_log2(uint32_t v) {
#if defined(__GNUC__)
    return 31 - __builtin_clz(v);
#else
    int b = 0;
    while (v >>= 1) b++;
    return b;
#endif
}

typedef struct { uint32_t recip[64]; uint32_t corr[64]; uint32_t scale[64]; } jd_divisors;

static void jd_divisors_init(jd_divisors *dv, const uint16_t *q) {
    int i;
    for (i = 0; i < 64; i++) {
        uint32_t div = (uint32_t)q[i] << 3, fq, fr, c;
        int b = jd_floor_log2(div), r = 16 + b;
        fq = ((uint32_t)1 << r) / div;
        fr = ((uint32_t)1 << r) % div;
        c = div / 2;
        if (fr == 0) { fq >>= 1; r--; }          /* power of two: keep fq within 16 bits */
        else if (fr <= div / 2) c++;
        else fq++;
        dv->recip[i] = fq & 0xFFFF;
        dv->corr[i] = c & 0xFFFF;
        dv->scale[i] = (uint32_t)1 << (32 - r);
    }
}

/* Level-shifted 8x8 block at src (row stride `stride`) -> quantized natural-order coefficients. */
JD_INLINE void jd_block(const uint8_t *src, size_t stride, const jd_divisors *dv, int16_t *out) {
    int32_t a[64], b[64];
    int x, y, i;
    for (y = 0; y < 8; y++)                   /* transposed load: lanes are image rows */
        for (x = 0; x < 8; x++)
            a[x * 8 + y] = (int32_t)src[y * stride + x] - 128;
    jd_dct8_lanes(a, b, 1);                   /* row pass: b[u*8 + y] */
    for (y = 0; y < 8; y++)
        for (x = 0; x < 8; x++)
            a[y * 8 + x] = b[x * 8 + y];      /* a[y*8 + u] */
    jd_dct8_lanes(a, b, 0);                   /* column pass: b[v*8 + u], natural order */
    for (i = 0; i < 64; i++) {
        int32_t v = b[i];
        uint32_t sign = (uint32_t)(v >> 31);  /* 0 or all ones */
        uint32_t mag = (uint32_t)((v ^ (int32_t)sign) - (int32_t)sign);
        uint32_t t = (((mag + dv->corr[i]) & 0xFFFF) * dv->recip[i]) >> 16;
        t = (t * dv->scale[i]) >> 16;
        out[i] = (int16_t)((t ^ sign) - sign);
    }
}

JD_CLONES
int jd_forward_dct(const uint8_t *rgb, int H, int W, const uint16_t *ql,
                          const uint16_t *qc, int16_t *y, int16_t *cb, int16_t *cr) {
    jd_divisors dl, dc;
    int my, r, x, i, bx, by, cw = W / 2;
    uint8_t *ybuf = (uint8_t *)malloc((size_t)16 * W * 3);
    uint8_t *cbf, *crf;
    if (ybuf == NULL) return -1;
    cbf = ybuf + (size_t)16 * W;
    crf = cbf + (size_t)16 * W;
    jd_divisors_init(&dl, ql);
    jd_divisors_init(&dc, qc);
    for (my = 0; my < H / 16; my++) {
        /* colour conversion of the 16-row strip (jccolext.c rgb_ycc_convert): the sums of
           its table entries, computed directly; B->Cb/R->Cr carry CBCR_OFFSET and
           ONE_HALF - 1 so that Cb/Cr never reach 256 */
        for (r = 0; r < 16; r++) {
            const uint8_t *p = rgb + ((size_t)my * 16 + r) * W * 3;
            uint8_t *yo = ybuf + (size_t)r * W, *bo = cbf + (size_t)r * W, *ro = crf + (size_t)r * W;
            for (x = 0; x < W; x++) {
                int32_t R = p[3 * x], G = p[3 * x + 1], B = p[3 * x + 2];
                yo[x] = (uint8_t)((JD_FIX16(0.29900) * R + JD_FIX16(0.58700) * G + JD_FIX16(0.11400) * B
                                   + JD_ONE_HALF) >> JD_SCALEBITS);
                bo[x] = (uint8_t)((-JD_FIX16(0.16874) * R - JD_FIX16(0.33126) * G + JD_FIX16(0.50000) * B
                                   + JD_CBCR_OFFSET + JD_ONE_HALF - 1) >> JD_SCALEBITS);
                ro[x] = (uint8_t)((JD_FIX16(0.50000) * R - JD_FIX16(0.41869) * G - JD_FIX16(0.08131) * B
                                   + JD_CBCR_OFFSET + JD_ONE_HALF - 1) >> JD_SCALEBITS);
            }
        }
        for (by = 0; by < 2; by++)
            for (bx = 0; bx < W / 8; bx++)
                jd_block(ybuf + (size_t)by * 8 * W + bx * 8, (size_t)W, &dl,
                         y + (((size_t)my * 2 + by) * (W / 8) + bx) * 64);
        /* chroma: h2v2 downsampling with the alternating 1,2,1,2 bias (jcsample.c), in place
           into the first 8 rows of each full-resolution buffer, then DCT + quantize */
        for (i = 0; i < 2; i++) {
            uint8_t *c = i == 0 ? cbf : crf;
            int16_t *out = i == 0 ? cb : cr;
            for (r = 0; r < 8; r++) {
                const uint8_t *a = c + (size_t)(2 * r) * W, *b = a + W;
                uint8_t *o = c + (size_t)r * W;
                for (x = 0; x < cw; x++)
                    o[x] = (uint8_t)((a[2 * x] + a[2 * x + 1] + b[2 * x] + b[2 * x + 1] + 1 + (x & 1)) >> 2);
            }
            for (bx = 0; bx < W / 16; bx++)
                jd_block(c + bx * 8, (size_t)W, &dc, out + ((size_t)my * (W / 16) + bx) * 64);
        }
    }
    free(ybuf);
    return 0;
}

