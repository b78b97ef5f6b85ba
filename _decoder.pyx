# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""jdct_cli._decoder: the C boundary over libjpeg-turbo (see jdct_cli/_decoder.pyi for the contract).

Design: every libjpeg call that may fail goes through a tiny C wrapper (verbatim block below) that
does its own ``setjmp``; our ``error_exit`` formats libjpeg's message and ``longjmp``s back into that
wrapper, which returns -1. Cython code therefore never sees a longjmp crossing its frames (which
would skip Python reference counting), and every caller runs ``jd_dec_close``/``jd_enc_close`` on
every path, so libjpeg's memory is always released.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, int16_t, uint16_t, int32_t, int64_t
from libc.string cimport memcpy, memchr
from jpeglib cimport *

from jdct_cli.errors import ImageTooLargeError, JpegError

cnp.import_array()

cdef extern from *:
    """
    #include <setjmp.h>
    #include <stdint.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <jpeglib.h>
    #include <jerror.h>
    #include <math.h>

    #define JD_STR2(x) #x
    #define JD_STR(x) JD_STR2(x)
    #ifdef LIBJPEG_TURBO_VERSION
    #define JD_VERSION JD_STR(LIBJPEG_TURBO_VERSION) " (libjpeg API " JD_STR(JPEG_LIB_VERSION) ")"
    #else
    #define JD_VERSION "libjpeg API " JD_STR(JPEG_LIB_VERSION)
    #endif

    typedef struct {
        struct jpeg_error_mgr pub;
        jmp_buf jb;
        int strict;        /* first warning becomes an error */
        int warnings;      /* warnings seen (emit_message level -1) */
        char msg[JMSG_LENGTH_MAX];
    } jd_err;

    static void jd_error_exit(j_common_ptr cinfo) {
        jd_err *e = (jd_err *)cinfo->err;
        (*cinfo->err->format_message)(cinfo, e->msg);
        longjmp(e->jb, 1);
    }

    /* libjpeg must never print: messages are only counted (warnings) or discarded (trace). */
    static void jd_output_message(j_common_ptr cinfo) { (void)cinfo; }

    static void jd_emit_message(j_common_ptr cinfo, int msg_level) {
        jd_err *e = (jd_err *)cinfo->err;
        if (msg_level < 0) {
            e->warnings++;
            cinfo->err->num_warnings++;
            if (e->strict) {
                (*cinfo->err->format_message)(cinfo, e->msg);
                longjmp(e->jb, 1);
            }
        }
    }

    static void jd_err_init(jd_err *e, int strict) {
        jpeg_std_error(&e->pub);
        e->pub.error_exit = jd_error_exit;
        e->pub.output_message = jd_output_message;
        e->pub.emit_message = jd_emit_message;
        e->strict = strict;
        e->warnings = 0;
        e->msg[0] = 0;
    }

    /* ---------------- decompression ---------------- */
    /* A progressive file may carry thousands of tiny scans, each re-walking the whole coefficient
       buffer: a cheap denial of service. Real encoders write about ten; refuse more than this. */
    #define JD_MAX_SCANS 500

    typedef struct {
        struct jpeg_decompress_struct d;
        jd_err e;
        struct jpeg_progress_mgr progress;
        int created;
        jvirt_barray_ptr *coefs;
        JSAMPLE *scratch;
    } jd_dec;

    /* libjpeg calls this between input steps, inside our setjmp-protected wrappers. */
    static void jd_progress(j_common_ptr cinfo) {
        j_decompress_ptr d = (j_decompress_ptr)cinfo;
        jd_err *e = (jd_err *)cinfo->err;
        if (d->input_scan_number > JD_MAX_SCANS) {
            snprintf(e->msg, JMSG_LENGTH_MAX, "too many scans in a progressive JPEG (more than %d)",
                     JD_MAX_SCANS);
            longjmp(e->jb, 1);
        }
    }

    /* Create the decompressor, attach the memory source and read the header. */
    static int jd_dec_open(jd_dec *c, const unsigned char *buf, size_t len, int strict, int save_exif) {
        memset(&c->d, 0, sizeof(c->d));
        c->created = 0;
        c->coefs = NULL;
        c->scratch = NULL;
        jd_err_init(&c->e, strict);
        c->d.err = &c->e.pub;
        if (setjmp(c->e.jb)) return -1;
        jpeg_create_decompress(&c->d);
        c->created = 1;
        memset(&c->progress, 0, sizeof(c->progress));
        c->progress.progress_monitor = jd_progress;
        c->d.progress = &c->progress;
        jpeg_mem_src(&c->d, buf, (unsigned long)len);
        if (save_exif) jpeg_save_markers(&c->d, JPEG_APP0 + 1, 0xFFFF);
        jpeg_read_header(&c->d, TRUE);
        return 0;
    }

    static void jd_dec_close(jd_dec *c) {
        if (c->created) jpeg_destroy_decompress(&c->d);
        c->created = 0;
        free(c->scratch);
        c->scratch = NULL;
    }

    static int jd_dec_read_coefficients(jd_dec *c) {
        if (setjmp(c->e.jb)) return -1;
        c->coefs = jpeg_read_coefficients(&c->d);
        return 0;
    }

    /* Copy component ci's virtual block array into dst (bh*bw*64 JCOEFs, row-major). */
    static int jd_dec_copy_component(jd_dec *c, int ci, JCOEF *dst, JDIMENSION bh, JDIMENSION bw) {
        JDIMENSION r;
        if (setjmp(c->e.jb)) return -1;
        for (r = 0; r < bh; r++) {
            JBLOCKARRAY rows = (*c->d.mem->access_virt_barray)(
                (j_common_ptr)&c->d, c->coefs[ci], r, 1, FALSE);
            memcpy(dst + (size_t)r * bw * DCTSIZE2, rows[0], (size_t)bw * sizeof(JBLOCK));
        }
        return 0;
    }

    static int jd_dec_start(jd_dec *c) {
        if (setjmp(c->e.jb)) return -1;
        jpeg_start_decompress(&c->d);
        return 0;
    }

    static int jd_dec_crop(jd_dec *c, JDIMENSION *xoffset, JDIMENSION *width) {
        if (setjmp(c->e.jb)) return -1;
        jpeg_crop_scanline(&c->d, xoffset, width);
        return 0;
    }

    static int jd_dec_skip(jd_dec *c, JDIMENSION n) {
        if (setjmp(c->e.jb)) return -1;
        while (n > 0) {
            JDIMENSION done = jpeg_skip_scanlines(&c->d, n);
            if (done == 0) break;
            n -= done;
        }
        return 0;
    }

    /* Adobe CMYK is stored inverted (255 = no ink): with libjpeg's values C,K the RGB red is
       C*K/255; rounded like Pillow's MULDIV255 so both agree exactly. */
    static inline JSAMPLE jd_muldiv255(unsigned a, unsigned b) {
        unsigned t = a * b + 128;
        return (JSAMPLE)(((t >> 8) + t) >> 8);
    }

    /* Read nrows output rows into dst (RGB, dst_stride bytes per row), dropping the first xskip
       output pixels of each scanline and keeping outw; CMYK scanlines are converted to RGB. */
    static int jd_dec_read_rgb(jd_dec *c, JSAMPLE *dst, size_t dst_stride, JDIMENSION nrows,
                               JDIMENSION xskip, JDIMENSION outw, int cmyk) {
        JSAMPROW rowptrs[32];
        JDIMENSION done = 0, got, i, x;
        int nc = c->d.output_components;
        int direct = (!cmyk && xskip == 0 && outw == c->d.output_width);
        int batch = c->d.rec_outbuf_height > 0 ? c->d.rec_outbuf_height : 1;
        if (batch > 32) batch = 32;
        if (setjmp(c->e.jb)) return -1;
        if (!direct && c->scratch == NULL) {
            c->scratch = (JSAMPLE *)malloc((size_t)c->d.output_width * nc * batch);
            if (c->scratch == NULL) {
                strcpy(c->e.msg, "out of memory for a scanline buffer");
                return -1;
            }
        }
        while (done < nrows) {
            JDIMENSION want = nrows - done;
            if (want > (JDIMENSION)batch) want = batch;
            for (i = 0; i < want; i++)
                rowptrs[i] = direct ? dst + (size_t)(done + i) * dst_stride
                                    : c->scratch + (size_t)i * c->d.output_width * nc;
            got = jpeg_read_scanlines(&c->d, rowptrs, want);
            if (got == 0) {
                strcpy(c->e.msg, "libjpeg returned no scanlines");
                return -1;
            }
            if (!direct) {
                for (i = 0; i < got; i++) {
                    const JSAMPLE *src = rowptrs[i] + (size_t)xskip * nc;
                    JSAMPLE *out = dst + (size_t)(done + i) * dst_stride;
                    if (cmyk) {
                        for (x = 0; x < outw; x++) {
                            unsigned k = src[4 * x + 3];
                            out[3 * x] = jd_muldiv255(src[4 * x], k);
                            out[3 * x + 1] = jd_muldiv255(src[4 * x + 1], k);
                            out[3 * x + 2] = jd_muldiv255(src[4 * x + 2], k);
                        }
                    } else {
                        memcpy(out, src, (size_t)outw * 3);
                    }
                }
            }
            done += got;
        }
        return 0;
    }

    /* ---------------- compression (the reference path) ---------------- */
    typedef struct {
        struct jpeg_compress_struct c;
        jd_err e;
        int created;
        unsigned char *out;
        unsigned long outsize;
    } jd_enc;

    static int jd_encode(jd_enc *s, const JSAMPLE *rgb, JDIMENSION w, JDIMENSION h, size_t stride,
                         int quality, int h0, int v0) {
        JSAMPROW rowptrs[16];
        JDIMENSION i, n;
        memset(&s->c, 0, sizeof(s->c));
        s->created = 0;
        s->out = NULL;
        s->outsize = 0;
        jd_err_init(&s->e, 0);
        s->c.err = &s->e.pub;
        if (setjmp(s->e.jb)) return -1;
        jpeg_create_compress(&s->c);
        s->created = 1;
        jpeg_mem_dest(&s->c, &s->out, &s->outsize);
        s->c.image_width = w;
        s->c.image_height = h;
        s->c.input_components = 3;
        s->c.in_color_space = JCS_RGB;
        jpeg_set_defaults(&s->c);
        jpeg_set_quality(&s->c, quality, TRUE);
        s->c.dct_method = JDCT_ISLOW;
        s->c.optimize_coding = FALSE;
        s->c.comp_info[0].h_samp_factor = h0;
        s->c.comp_info[0].v_samp_factor = v0;
        s->c.comp_info[1].h_samp_factor = 1;
        s->c.comp_info[1].v_samp_factor = 1;
        s->c.comp_info[2].h_samp_factor = 1;
        s->c.comp_info[2].v_samp_factor = 1;
        jpeg_start_compress(&s->c, TRUE);
        while (s->c.next_scanline < h) {
            n = h - s->c.next_scanline;
            if (n > 16) n = 16;
            for (i = 0; i < n; i++)
                rowptrs[i] = (JSAMPROW)(rgb + (size_t)(s->c.next_scanline + i) * stride);
            jpeg_write_scanlines(&s->c, rowptrs, n);
        }
        jpeg_finish_compress(&s->c);
        return 0;
    }

    static void jd_enc_close(jd_enc *s) {
        if (s->created) jpeg_destroy_compress(&s->c);
        s->created = 0;
        free(s->out);
        s->out = NULL;
    }

    /* ---------------- forward DCT: libjpeg-turbo's 4:2:0 encoder front end ----------------
       Written from the algorithms of jccolor.c, jcsample.c, jfdctint.c, jcdctmgr.c, jcparam.c
       (libjpeg-turbo 2.1.5); tests check bit-identity with encode() + read_coefficients(). */
    #define JD_SCALEBITS 16
    #define JD_ONE_HALF ((int32_t)1 << (JD_SCALEBITS - 1))
    #define JD_CBCR_OFFSET ((int32_t)128 << JD_SCALEBITS)
    #define JD_FIX16(x) ((int32_t)((x) * (1L << JD_SCALEBITS) + 0.5))

    /* jfdctint.c constants: CONST_BITS 13, PASS1_BITS 2, FIX(x) = round(x * 2^13). */
    #define JD_CB 13
    #define JD_P1 2
    #define JD_DESCALE(x, n) (((x) + ((int32_t)1 << ((n) - 1))) >> (n))
    #define JD_INLINE static inline __attribute__((always_inline))
    /* The hot loops are written over 8 independent lanes so the compiler vectorizes them; on
       x86-64 Linux/GCC an AVX2 clone is also built and picked at load time (ifunc). */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define JD_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define JD_CLONES
    #endif

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
    typedef struct { uint32_t recip[64]; uint32_t corr[64]; uint32_t scale[64]; } jd_divisors;

    static void jd_divisors_init(jd_divisors *dv, const uint16_t *q) {
        int i;
        for (i = 0; i < 64; i++) {
            uint32_t div = (uint32_t)q[i] << 3, fq, fr, c;
            int b = 31 - __builtin_clz(div), r = 16 + b;
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

    /* jcparam.c: jpeg_set_quality(quality, force_baseline=TRUE) applied to the standard tables. */
    static const uint16_t jd_std_luma[64] = {
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99};
    static const uint16_t jd_std_chroma[64] = {
        17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
        24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99};

    static void jd_quality_tables(int quality, uint16_t *luma, uint16_t *chroma) {
        long scale, t;
        int i;
        if (quality <= 0) quality = 1;
        if (quality > 100) quality = 100;
        scale = quality < 50 ? 5000L / quality : 200L - quality * 2L;
        for (i = 0; i < 64; i++) {
            t = ((long)jd_std_luma[i] * scale + 50L) / 100L;
            luma[i] = (uint16_t)(t < 1 ? 1 : t > 255 ? 255 : t);
            t = ((long)jd_std_chroma[i] * scale + 50L) / 100L;
            chroma[i] = (uint16_t)(t < 1 ? 1 : t > 255 ? 255 : t);
        }
    }

    /* rgb: H x W x 3 (row stride W*3), H and W multiples of 16. y: (H/8, W/8, 64); cb, cr:
       (H/16, W/16, 64). Returns -1 when scratch memory cannot be allocated. */
    JD_CLONES
    static int jd_forward_dct(const uint8_t *rgb, int H, int W, const uint16_t *ql,
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

    /* ---------------- antialiased bilinear resize (Pillow's arithmetic) ----------------
       Separable triangle filter stretched by the downscale factor, 22-bit fixed-point weights,
       horizontal pass over the rows the vertical pass needs, then the vertical pass, rounding to
       uint8 after each: the same arithmetic as Pillow's Image.resize(BILINEAR, box=...,
       reducing_gap=None) in Pillow 13, so results are bit-identical to it (tests compare), minus the
       RGB<->RGBX copies a PIL image costs. Box coordinates are floats, as Pillow receives them. */
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
    static int jd_resize_bilinear(const uint8_t *src, int sw, int sh, float x0, float y0,
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

    static const char *jd_version(void) { return JD_VERSION; }
    """
    ctypedef struct jd_err:
        int strict
        int warnings
        char msg[200]

    ctypedef struct jd_dec:
        jpeg_decompress_struct d
        jd_err e

    ctypedef struct jd_enc:
        jd_err e
        unsigned char *out
        unsigned long outsize

    int JD_MAX_SCANS
    int jd_dec_open(jd_dec *c, const unsigned char *buf, size_t len, int strict, int save_exif) nogil
    void jd_dec_close(jd_dec *c) nogil
    int jd_dec_read_coefficients(jd_dec *c) nogil
    int jd_dec_copy_component(jd_dec *c, int ci, JCOEF *dst, JDIMENSION bh, JDIMENSION bw) nogil
    int jd_dec_start(jd_dec *c) nogil
    int jd_dec_crop(jd_dec *c, JDIMENSION *xoffset, JDIMENSION *width) nogil
    int jd_dec_skip(jd_dec *c, JDIMENSION n) nogil
    int jd_dec_read_rgb(jd_dec *c, JSAMPLE *dst, size_t dst_stride, JDIMENSION nrows,
                        JDIMENSION xskip, JDIMENSION outw, int cmyk) nogil
    int jd_encode(jd_enc *s, const JSAMPLE *rgb, JDIMENSION w, JDIMENSION h, size_t stride,
                  int quality, int h0, int v0) nogil
    void jd_enc_close(jd_enc *s) nogil
    const char *jd_version() nogil
    void jd_quality_tables(int quality, uint16_t *luma, uint16_t *chroma) nogil
    int jd_forward_dct(const uint8_t *rgb, int H, int W, const uint16_t *ql, const uint16_t *qc,
                       int16_t *y, int16_t *cb, int16_t *cr) nogil
    int jd_resize_bilinear(const uint8_t *src, int sw, int sh, float x0, float y0, float x1, float y1,
                           uint8_t *dst, int dw, int dh) nogil


DEFAULT_MAX_PIXELS = 100_000_000

# Coefficient memory guard: a conforming image stores at most a few padded full-resolution planes
# (one per component, 4 components at most for the colour spaces jdct handles); the slack covers
# MCU padding of tiny images with large sampling factors.
_COEF_SLACK = 1 << 22

_COLOR_SPACES = {JCS_UNKNOWN: "UNKNOWN", JCS_GRAYSCALE: "GRAYSCALE", JCS_RGB: "RGB",
                 JCS_YCbCr: "YCbCr", JCS_CMYK: "CMYK", JCS_YCCK: "YCCK"}

_SUBSAMPLING = {"4:2:0": (2, 2), "4:2:2": (2, 1), "4:4:4": (1, 1), "4:4:0": (1, 2)}


def libjpeg_version():
    """libjpeg-turbo's version as compiled against, e.g. "2.1.5 (libjpeg API 62)"."""
    return jd_version().decode("ascii")


cdef str _message(jd_err *e):
    return (<bytes>e.msg).decode("latin-1") if e.msg[0] != 0 else "libjpeg failed without a message"


cdef object _header_failure(jd_dec *c, int64_t max_pixels):
    """The exception for a failed header read: the pixel budget wins when the SOF was parsed and
    declares too many pixels (libjpeg refuses > 65500 itself, but the budget is the real reason)."""
    cdef int64_t pixels = <int64_t>c.d.image_width * <int64_t>c.d.image_height
    msg = _message(&c.e)
    if pixels > max_pixels:
        return ImageTooLargeError(
            f"image declares {c.d.image_width}x{c.d.image_height} = {pixels} pixels, more than the "
            f"budget of {max_pixels} (libjpeg: {msg})", pixels=pixels, max_pixels=max_pixels)
    return JpegError(msg)


# A progressive scan walks every block of the image, at ~10-15 ns a block here: a small file can
# carry hundreds of scans over a huge image (seconds per scan-walk budget is what matters, not the
# count alone). Scans are capped so that scans x blocks stays near this many block visits (about
# 1.5 s of decoding here), but never below _MIN_SCAN_LIMIT, which real encoders never approach
# (jpegtran's progressive script has 10 scans, mozjpeg's up to ~20).
_SCAN_BLOCK_BUDGET = 100_000_000
_MIN_SCAN_LIMIT = 64


cdef int64_t _count_sos(const unsigned char *data, size_t size) noexcept nogil:
    """Start-of-scan markers (0xFF 0xDA) in the bytes: entropy-coded data stuffs every 0xFF with
    0x00, so each pair found is a real marker (fill bytes 0xFF 0xFF... are skipped one by one)."""
    cdef int64_t count = 0
    cdef size_t i = 0
    cdef const unsigned char *hit
    while i < size:
        hit = <const unsigned char *>memchr(data + i, 0xFF, size - i)
        if hit == NULL:
            break
        i = <size_t>(hit - data) + 1
        if i < size and data[i] == 0xDA:
            count += 1
    return count


cdef object _check_budget(jd_dec *c, int64_t max_pixels, const unsigned char *data, size_t size):
    """None when the declared image fits the pixel, coefficient and scan budgets, else the exception.

    The scan budget (progressive files only) counts the file's SOS markers before any decoding:
    more than ``max(_MIN_SCAN_LIMIT, _SCAN_BLOCK_BUDGET / blocks)`` scans (and never more than
    JD_MAX_SCANS, which the progress monitor also enforces) is refused at once.
    """
    cdef int64_t pixels = <int64_t>c.d.image_width * <int64_t>c.d.image_height
    cdef int64_t coefs = 0
    cdef int ci
    if pixels > max_pixels:
        return ImageTooLargeError(
            f"image declares {c.d.image_width}x{c.d.image_height} = {pixels} pixels, more than the "
            f"budget of {max_pixels}", pixels=pixels, max_pixels=max_pixels)
    for ci in range(c.d.num_components):
        coefs += <int64_t>_padded(c.d.comp_info[ci].height_in_blocks, c.d.comp_info[ci].v_samp_factor) * \
            _padded(c.d.comp_info[ci].width_in_blocks, c.d.comp_info[ci].h_samp_factor) * 64
    if coefs > 4 * max_pixels + _COEF_SLACK:
        return ImageTooLargeError(
            f"image would need {coefs} DCT coefficients ({c.d.num_components} components), more than "
            f"the budget allows for {max_pixels} pixels", pixels=pixels, max_pixels=max_pixels)
    cdef int64_t blocks, limit, scans
    if c.d.progressive_mode and data != NULL:
        blocks = max(coefs // 64, 1)
        limit = min(max(_SCAN_BLOCK_BUDGET // blocks, _MIN_SCAN_LIMIT), JD_MAX_SCANS)
        with nogil:
            scans = _count_sos(data, size)
        if scans > limit:
            return JpegError(
                f"too many scans in a progressive JPEG for its size: {scans} scans over {blocks} blocks "
                f"(at most {limit} allowed: decoding cost grows with scans x blocks)")
    return None


cdef inline int64_t _padded(JDIMENSION n, int factor) noexcept nogil:
    # libjpeg's coefficient buffers are rounded up to whole MCUs (jdcoefct.c: jround_up).
    return ((<int64_t>n + factor - 1) // factor) * factor


cdef const unsigned char *_ptr(const unsigned char[::1] buf) noexcept:
    return &buf[0] if buf.shape[0] > 0 else NULL


def read_header(data, *, int64_t max_pixels=DEFAULT_MAX_PIXELS):
    """Parse the markers up to the first SOS (see the .pyi); allocates nothing proportional to the image.

    Returns a dict: width, height (pixels), precision (bits), num_components, color_space (str),
    adobe_transform (int or None), jfif, progressive, arithmetic (bool), restart_interval (MCUs),
    components (list of dicts id/h/v/quant_table/blocks_high/blocks_wide), exif (bytes or None).
    """
    cdef const unsigned char[::1] buf = data
    cdef const unsigned char *p = _ptr(buf)
    cdef size_t n = buf.shape[0]
    cdef jd_dec c
    cdef int rc, ci
    cdef jpeg_saved_marker_ptr m
    cdef jpeg_component_info *comp
    try:
        with nogil:
            rc = jd_dec_open(&c, p, n, 0, 1)
        if rc != 0:
            raise _header_failure(&c, max_pixels)
        err = _check_budget(&c, max_pixels, NULL, 0)  # facts only: the scan budget is a decoding matter
        if err is not None:
            raise err
        components = []
        for ci in range(c.d.num_components):
            comp = &c.d.comp_info[ci]
            components.append({
                "id": comp.component_id, "h": comp.h_samp_factor, "v": comp.v_samp_factor,
                "quant_table": comp.quant_tbl_no,
                "blocks_high": _padded(comp.height_in_blocks, comp.v_samp_factor),
                "blocks_wide": _padded(comp.width_in_blocks, comp.h_samp_factor),
            })
        exif = None
        m = c.d.marker_list
        while m != NULL:
            if m.marker == JPEG_APP0 + 1 and m.data_length >= 6 and \
                    (<bytes>m.data[:6]) == b"Exif\x00\x00" and exif is None:
                exif = <bytes>m.data[6:m.data_length]
            m = m.next
        return {
            "width": c.d.image_width,
            "height": c.d.image_height,
            "precision": c.d.data_precision,
            "num_components": c.d.num_components,
            "color_space": _COLOR_SPACES.get(c.d.jpeg_color_space, "UNKNOWN"),
            "adobe_transform": int(c.d.Adobe_transform) if c.d.saw_Adobe_marker else None,
            "jfif": bool(c.d.saw_JFIF_marker),
            "progressive": bool(c.d.progressive_mode),
            "arithmetic": bool(c.d.arith_code),
            "restart_interval": c.d.restart_interval,
            "components": components,
            "exif": exif,
        }
    finally:
        jd_dec_close(&c)


def read_coefficients(data, *, int64_t max_pixels=DEFAULT_MAX_PIXELS, bint strict=False):
    """Quantized DCT coefficients of every component, without an inverse DCT.

    Returns ``(components, quant, warnings)``: ``components[i]`` int16 ``(bh, bw, 64)`` natural
    order (padded to whole MCUs); ``quant`` uint16 ``(n_components, 64)`` natural order (the table
    each component was quantized with); ``warnings`` the number of libjpeg warnings.
    """
    cdef const unsigned char[::1] buf = data
    cdef const unsigned char *p = _ptr(buf)
    cdef size_t n = buf.shape[0]
    cdef jd_dec c
    cdef int rc, ci, k, nc
    cdef JDIMENSION bh, bw
    cdef cnp.ndarray arr
    cdef uint16_t[:, ::1] qv
    cdef JQUANT_TBL *tbl
    try:
        with nogil:
            rc = jd_dec_open(&c, p, n, strict, 0)
        if rc != 0:
            raise _header_failure(&c, max_pixels)
        err = _check_budget(&c, max_pixels, p, n)
        if err is not None:
            raise err
        with nogil:
            rc = jd_dec_read_coefficients(&c)
        if rc != 0:
            raise JpegError(_message(&c.e))
        nc = c.d.num_components
        components = []
        for ci in range(nc):
            bh = <JDIMENSION>_padded(c.d.comp_info[ci].height_in_blocks, c.d.comp_info[ci].v_samp_factor)
            bw = <JDIMENSION>_padded(c.d.comp_info[ci].width_in_blocks, c.d.comp_info[ci].h_samp_factor)
            arr = np.empty((bh, bw, 64), dtype=np.int16)
            with nogil:
                rc = jd_dec_copy_component(&c, ci, <JCOEF *>cnp.PyArray_DATA(arr), bh, bw)
            if rc != 0:
                raise JpegError(_message(&c.e))
            components.append(arr)
        quant = np.zeros((nc, 64), dtype=np.uint16)
        qv = quant
        for ci in range(nc):
            # quant_table is latched when the component's first scan starts; a component that
            # never appears in a scan falls back to its slot's table (or stays zero).
            tbl = c.d.comp_info[ci].quant_table
            if tbl == NULL and 0 <= c.d.comp_info[ci].quant_tbl_no < 4:
                tbl = c.d.quant_tbl_ptrs[c.d.comp_info[ci].quant_tbl_no]
            if tbl != NULL:
                for k in range(64):
                    qv[ci, k] = tbl.quantval[k]
        return components, quant, c.e.warnings
    finally:
        jd_dec_close(&c)


def decode(data, *, int scale=1, roi=None, int64_t max_pixels=DEFAULT_MAX_PIXELS, bint strict=False,
           int scale_num=1):
    """Decode to RGB with libjpeg's islow IDCT and fancy upsampling (see the .pyi).

    Scaling ``scale_num/scale``: 1/1, 1/2, 1/4, 1/8, or M/8 for M in 1..16 (output
    ``ceil(W*M/8) x ceil(H*M/8)``); ``roi`` ``(x, y, w, h)`` in output pixels. Returns
    ``(rgb, warnings)``: ``rgb`` uint8 C-contiguous ``(H, W, 3)``.
    """
    cdef const unsigned char[::1] buf = data
    cdef const unsigned char *p = _ptr(buf)
    cdef size_t n = buf.shape[0]
    cdef jd_dec c
    cdef int rc, cmyk = 0
    cdef JDIMENSION rx, ry, rw, rh, xoff, cropw
    cdef cnp.ndarray out
    cdef int eighths  # the scaling as M/8, which is what libjpeg-turbo implements
    if scale_num == 1:
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"scale must be 1, 2, 4 or 8, not {scale}")
        eighths = 8 // scale
    else:
        if scale != 8 or not 1 <= scale_num <= 16:
            raise ValueError(f"scaling {scale_num}/{scale} is not M/8 with M in 1..16")
        eighths = scale_num
    try:
        with nogil:
            rc = jd_dec_open(&c, p, n, strict, 0)
        if rc != 0:
            raise _header_failure(&c, max_pixels)
        err = _check_budget(&c, max_pixels, p, n)
        if err is not None:
            raise err
        if c.d.jpeg_color_space == JCS_CMYK or c.d.jpeg_color_space == JCS_YCCK:
            c.d.out_color_space = JCS_CMYK
            cmyk = 1
        else:
            c.d.out_color_space = JCS_RGB
        c.d.dct_method = JDCT_ISLOW
        c.d.do_fancy_upsampling = 1
        c.d.scale_num = eighths
        c.d.scale_denom = 8
        with nogil:
            rc = jd_dec_start(&c)
        if rc != 0:
            raise JpegError(_message(&c.e))
        if roi is None:
            rx, ry, rw, rh = 0, 0, c.d.output_width, c.d.output_height
        else:
            x, y, w, h = (int(v) for v in roi)
            if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > c.d.output_width or y + h > c.d.output_height:
                raise ValueError(
                    f"roi {tuple(roi)} (x, y, width, height) is not inside the "
                    f"{c.d.output_width}x{c.d.output_height} output image")
            rx, ry, rw, rh = x, y, w, h
        out = np.empty((rh, rw, 3), dtype=np.uint8)
        xoff = 0
        # Sampling factors above 2 (4:1:1, 4:1:0) scale chroma by other IDCT sizes, where
        # libjpeg-turbo's cropped output differs from the full decode in a band of columns: those
        # rare files decode full width and we keep the region.
        if (rx != 0 or rw != c.d.output_width) and c.d.max_h_samp_factor <= 2 and c.d.max_v_samp_factor <= 2:
            # crop_scanline widens the span leftwards to an iMCU boundary, and fancy upsampling
            # replicates the edge chroma sample at both ends of the cropped span: ask for a margin
            # of one iMCU (at most 4*M output pixels at scaling M/8) each side so the region we keep
            # sees its real neighbours, then drop the extra columns.
            margin = 4 * eighths
            xoff = rx - min(<JDIMENSION>margin, rx)
            cropw = min(rx + rw + margin, c.d.output_width) - xoff
            with nogil:
                rc = jd_dec_crop(&c, &xoff, &cropw)
            if rc != 0:
                raise JpegError(_message(&c.e))
        with nogil:
            rc = 0
            if ry > 0:
                rc = jd_dec_skip(&c, ry)
            if rc == 0:
                rc = jd_dec_read_rgb(&c, <JSAMPLE *>cnp.PyArray_DATA(out), rw * 3, rh, rx - xoff, rw, cmyk)
        if rc != 0:
            raise JpegError(_message(&c.e))
        return out, c.e.warnings
    finally:
        jd_dec_close(&c)


def encode(rgb, int quality=100, str subsampling="4:2:0"):
    """Baseline JPEG bytes of uint8 ``(H, W, 3)`` RGB with libjpeg-turbo (islow DCT,
    ``jpeg_set_quality(quality, TRUE)``, default Huffman tables). ``subsampling`` "4:2:0",
    "4:2:2", "4:4:4" or "4:4:0"."""
    if subsampling not in _SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {', '.join(_SUBSAMPLING)}, not {subsampling!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, not {quality}")
    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"encode needs a uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}")
    cdef const uint8_t[:, :, ::1] px = arr
    cdef JDIMENSION h = px.shape[0], w = px.shape[1]
    cdef int h0 = _SUBSAMPLING[subsampling][0], v0 = _SUBSAMPLING[subsampling][1]
    cdef jd_enc s
    cdef int rc
    try:
        with nogil:
            rc = jd_encode(&s, &px[0, 0, 0], w, h, <size_t>w * 3, quality, h0, v0)
        if rc != 0:
            raise JpegError(_message(&s.e))
        return (<char *>s.out)[:s.outsize]
    finally:
        jd_enc_close(&s)


def forward_dct(rgb, int quality=100):
    """The coefficients libjpeg-turbo's 4:2:0 encoder stores for ``rgb``, without entropy coding.

    ``rgb`` uint8 ``(H, W, 3)``, H and W multiples of 16; ``quality`` 1..100
    (``jpeg_set_quality(quality, TRUE)`` tables). Returns ``(y, cb, cr, quant)``: int16
    ``(H/8, W/8, 64)``, ``(H/16, W/16, 64)``, ``(H/16, W/16, 64)`` in natural order and uint16
    ``(3, 64)``; bit-identical to ``read_coefficients(encode(rgb, quality, "4:2:0"))``.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, not {quality}")
    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] % 16 or arr.shape[1] % 16 \
            or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"forward_dct needs a uint8 (H, W, 3) array with H and W positive multiples of 16, "
                         f"got {arr.dtype} {arr.shape}")
    cdef const uint8_t[:, :, ::1] px = arr
    cdef int H = px.shape[0], W = px.shape[1], rc, k
    quant = np.empty((3, 64), dtype=np.uint16)
    cdef uint16_t[:, ::1] q = quant
    y = np.empty((H // 8, W // 8, 64), dtype=np.int16)
    cb = np.empty((H // 16, W // 16, 64), dtype=np.int16)
    cr = np.empty((H // 16, W // 16, 64), dtype=np.int16)
    cdef int16_t[:, :, ::1] yv = y, cbv = cb, crv = cr
    with nogil:
        jd_quality_tables(quality, &q[0, 0], &q[1, 0])
        for k in range(64):
            q[2, k] = q[1, k]
        rc = jd_forward_dct(&px[0, 0, 0], H, W, &q[0, 0], &q[1, 0], &yv[0, 0, 0], &cbv[0, 0, 0], &crv[0, 0, 0])
    if rc != 0:
        raise MemoryError("forward_dct: no memory for a 16-row scratch strip")
    return y, cb, cr, quant


def resize_bilinear(rgb, box, int width, int height):
    """Antialiased bilinear resize of ``box`` ``(x0, y0, x1, y1)`` (float source pixels, within
    the image) of uint8 ``(H, W, 3)`` ``rgb`` to uint8 ``(height, width, 3)``, bit-identical to
    Pillow's ``Image.resize((width, height), BILINEAR, box=box, reducing_gap=None)`` (whose
    fixed-point arithmetic it follows). Releases the GIL.
    """
    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"resize_bilinear needs a uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}")
    if width < 1 or height < 1 or width > 65535 or height > 65535:
        raise ValueError(f"output size {width}x{height} must be 1..65535 on each side")
    cdef float x0, y0, x1, y1
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= arr.shape[1] and 0 <= y0 < y1 <= arr.shape[0]):
        raise ValueError(f"box {tuple(box)} (x0, y0, x1, y1) is not a non-empty region of the "
                         f"{arr.shape[1]}x{arr.shape[0]} image")
    cdef const uint8_t[:, :, ::1] px = arr
    out = np.empty((height, width, 3), dtype=np.uint8)
    cdef uint8_t[:, :, ::1] o = out
    cdef int rc, sw = px.shape[1], sh = px.shape[0]
    with nogil:
        rc = jd_resize_bilinear(&px[0, 0, 0], sw, sh, x0, y0, x1, y1, &o[0, 0, 0], width, height)
    if rc != 0:
        raise MemoryError("resize_bilinear: no memory for the filter weights or a row buffer")
    return out
