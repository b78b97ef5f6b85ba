/* libjpeg-turbo behind setjmp-protected wrappers: the error manager, decompression (header,
   budget, coefficients, RGB scanlines), the reference encoder and the version string. */
#include <stdlib.h>
#include <string.h>

#include "jdct.h"

#include <jerror.h>

#define JD_STR2(x) #x
#define JD_STR(x) JD_STR2(x)
#ifdef LIBJPEG_TURBO_VERSION
#define JD_VERSION JD_STR(LIBJPEG_TURBO_VERSION) " (libjpeg API " JD_STR(JPEG_LIB_VERSION) ")"
#else
#define JD_VERSION "libjpeg API " JD_STR(JPEG_LIB_VERSION)
#endif

const char *jd_version(void) { return JD_VERSION; }

/* ---------------------------------------------------------------------------- error manager */

static void jd_fail(jd_err *e, int code) {
    e->code = code;
    longjmp(e->jb, 1);
}

static void jd_error_exit(j_common_ptr cinfo) {
    jd_err *e = (jd_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    jd_fail(e, JD_ERR_LIBJPEG);
}

/* libjpeg must never print: messages are only counted (warnings) or dropped (trace). */
static void jd_output_message(j_common_ptr cinfo) { (void)cinfo; }

/* A warning the caller tolerates (see jd_tolerance). */
static int jd_tolerated(j_common_ptr cinfo, const jd_err *e, const char *msg) {
    int i, in_header = cinfo->is_decompressor && ((j_decompress_ptr)cinfo)->input_scan_number == 0;
    for (i = 0; i < e->strict.ntolerate && i < JD_MAX_TOLERATED; i++) {
        const jd_tolerance *t = &e->strict.tolerate[i];
        if (t->substring == NULL || strstr(msg, t->substring) == NULL) continue;
        if (!t->anywhere && !in_header) continue;
        if (t->at_most >= 0 && (long)cinfo->err->msg_parm.i[0] > t->at_most) continue;
        return 1;
    }
    return 0;
}

static void jd_emit_message(j_common_ptr cinfo, int msg_level) {
    jd_err *e = (jd_err *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    if (msg_level < 0) {
        e->warnings++;
        cinfo->err->num_warnings++;
        if (e->strict.on) {
            (*cinfo->err->format_message)(cinfo, msg);
            if (jd_tolerated(cinfo, e, msg)) {
                e->tolerated++;
                return;
            }
            memcpy(e->msg, msg, sizeof(msg));
            jd_fail(e, JD_ERR_LIBJPEG);
        }
    }
}

void jd_err_init(jd_err *e, const jd_strict *strict) {
    jpeg_std_error(&e->pub);
    e->pub.error_exit = jd_error_exit;
    e->pub.output_message = jd_output_message;
    e->pub.emit_message = jd_emit_message;
    memset(&e->strict, 0, sizeof(e->strict));
    if (strict != NULL) e->strict = *strict;
    e->warnings = 0;
    e->tolerated = 0;
    e->code = JD_OK;
    e->msg[0] = 0;
}

/* ---------------------------------------------------------------------------- decompression */

/* libjpeg calls this between input steps, inside our setjmp-protected wrappers: the scan budget
   is enforced while decoding too, whatever the marker count said. */
static void jd_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    jd_dec *c = (jd_dec *)d;  /* d is the first member of jd_dec */
    if (d->input_scan_number > c->scan_limit) jd_fail(&c->e, JD_ERR_TOO_MANY_SCANS);
}

int jd_dec_open(jd_dec *c, const unsigned char *buf, size_t len, const jd_strict *strict, int save) {
    int m;
    memset(&c->d, 0, sizeof(c->d));
    c->created = 0;
    c->scan_limit = JD_MAX_SCANS;
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
    if (save == JD_SAVE_EXIF) jpeg_save_markers(&c->d, JPEG_APP0 + 1, 0xFFFF);
    if (save == JD_SAVE_ALL) {
        jpeg_save_markers(&c->d, JPEG_COM, 0xFFFF);
        for (m = 0; m < 16; m++) jpeg_save_markers(&c->d, JPEG_APP0 + m, 0xFFFF);
    }
    jpeg_read_header(&c->d, TRUE);
    return 0;
}

void jd_dec_close(jd_dec *c) {
    if (c->created) jpeg_destroy_decompress(&c->d);
    c->created = 0;
    free(c->scratch);
    c->scratch = NULL;
}

/* libjpeg's coefficient buffers are rounded up to whole MCUs (jdcoefct.c: jround_up). */
static JDIMENSION jd_round_up(JDIMENSION n, int factor) {
    return (JDIMENSION)(((int64_t)n + factor - 1) / factor * factor);
}

void jd_dec_blocks(const jd_dec *c, int ci, JDIMENSION *rows, JDIMENSION *cols) {
    const jpeg_component_info *comp = &c->d.comp_info[ci];
    *rows = jd_round_up(comp->height_in_blocks, comp->v_samp_factor);
    *cols = jd_round_up(comp->width_in_blocks, comp->h_samp_factor);
}

int64_t jd_scan_limit(int64_t blocks) {
    int64_t limit = JD_SCAN_BLOCK_BUDGET / (blocks > 0 ? blocks : 1);
    if (limit < JD_MIN_SCAN_LIMIT) limit = JD_MIN_SCAN_LIMIT;
    if (limit > JD_MAX_SCANS) limit = JD_MAX_SCANS;
    return limit;
}

int jd_dec_check_budget(jd_dec *c, int64_t max_pixels, const unsigned char *data, size_t size,
                        jd_budget *out) {
    int ci;
    JDIMENSION rows, cols;
    memset(out, 0, sizeof(*out));
    out->pixels = (int64_t)c->d.image_width * (int64_t)c->d.image_height;
    for (ci = 0; ci < c->d.num_components; ci++) {
        jd_dec_blocks(c, ci, &rows, &cols);
        out->blocks += (int64_t)rows * (int64_t)cols;
    }
    out->coefs = out->blocks * DCTSIZE2;
    out->scan_limit = jd_scan_limit(out->blocks);
    c->scan_limit = out->scan_limit;
    if (out->pixels > max_pixels) {
        c->e.code = JD_ERR_TOO_MANY_PIXELS;
        return -1;
    }
    if (out->coefs > 4 * max_pixels + JD_COEF_SLACK) {
        c->e.code = JD_ERR_TOO_MANY_COEFS;
        return -1;
    }
    if (c->d.progressive_mode && data != NULL) {
        out->scans = jd_count_scans(data, size);
        if (out->scans > out->scan_limit) {
            c->e.code = JD_ERR_TOO_MANY_SCANS;
            return -1;
        }
    }
    return 0;
}

int jd_dec_read_coefficients(jd_dec *c) {
    if (setjmp(c->e.jb)) return -1;
    c->coefs = jpeg_read_coefficients(&c->d);
    return 0;
}

int jd_dec_copy_component(jd_dec *c, int ci, JCOEF *dst, JDIMENSION bh, JDIMENSION bw) {
    JDIMENSION r;
    if (setjmp(c->e.jb)) return -1;
    for (r = 0; r < bh; r++) {
        JBLOCKARRAY rows = (*c->d.mem->access_virt_barray)((j_common_ptr)&c->d, c->coefs[ci], r, 1, FALSE);
        memcpy(dst + (size_t)r * bw * DCTSIZE2, rows[0], (size_t)bw * sizeof(JBLOCK));
    }
    return 0;
}

const JQUANT_TBL *jd_dec_quant_table(const jd_dec *c, int ci) {
    const jpeg_component_info *comp = &c->d.comp_info[ci];
    /* latched when the component's first scan starts; a component that never appears in a scan
       falls back to its slot's table */
    if (comp->quant_table != NULL) return comp->quant_table;
    if (comp->quant_tbl_no >= 0 && comp->quant_tbl_no < NUM_QUANT_TBLS)
        return c->d.quant_tbl_ptrs[comp->quant_tbl_no];
    return NULL;
}

int jd_dec_start(jd_dec *c) {
    if (setjmp(c->e.jb)) return -1;
    jpeg_start_decompress(&c->d);
    return 0;
}

int jd_dec_crop(jd_dec *c, JDIMENSION *xoffset, JDIMENSION *width) {
    if (setjmp(c->e.jb)) return -1;
    jpeg_crop_scanline(&c->d, xoffset, width);
    return 0;
}

static void jd_skip_rows(jd_dec *c, JDIMENSION n) {
    while (n > 0) {
        JDIMENSION done = jpeg_skip_scanlines(&c->d, n);
        if (done == 0) break;
        n -= done;
    }
}

int jd_dec_skip(jd_dec *c, JDIMENSION n) {
    if (setjmp(c->e.jb)) return -1;
    jd_skip_rows(c, n);
    return 0;
}

/* Adobe CMYK is stored inverted (255 = no ink): with libjpeg's values C, K the RGB red is
   C * K / 255, rounded like Pillow's MULDIV255 so that both agree exactly. */
JD_INLINE JSAMPLE jd_muldiv255(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (JSAMPLE)(((t >> 8) + t) >> 8);
}

/* The body of jd_dec_read_rgb, kept out of the function that calls setjmp so that none of its
   locals can be clobbered by the longjmp. */
static int jd_read_rgb_rows(jd_dec *c, JSAMPLE *dst, size_t dst_stride, JDIMENSION nrows,
                            JDIMENSION xskip, JDIMENSION outw, int cmyk) {
    JSAMPROW rowptrs[32];
    JDIMENSION done = 0, got, i, x;
    int nc = c->d.output_components;
    int direct = (!cmyk && xskip == 0 && outw == c->d.output_width);
    int batch = c->d.rec_outbuf_height > 0 ? c->d.rec_outbuf_height : 1;
    if (batch > 32) batch = 32;
    if (!direct && c->scratch == NULL) {
        c->scratch = (JSAMPLE *)malloc((size_t)c->d.output_width * (size_t)nc * (size_t)batch);
        if (c->scratch == NULL) {
            c->e.code = JD_ERR_NO_MEMORY;
            return -1;
        }
    }
    while (done < nrows) {
        JDIMENSION want = nrows - done;
        if (want > (JDIMENSION)batch) want = (JDIMENSION)batch;
        for (i = 0; i < want; i++)
            rowptrs[i] = direct ? dst + (size_t)(done + i) * dst_stride
                                : c->scratch + (size_t)i * c->d.output_width * (size_t)nc;
        got = jpeg_read_scanlines(&c->d, rowptrs, want);
        if (got == 0) {
            c->e.code = JD_ERR_NO_SCANLINES;
            return -1;
        }
        if (!direct) {
            for (i = 0; i < got; i++) {
                const JSAMPLE *src = rowptrs[i] + (size_t)xskip * (size_t)nc;
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

int jd_dec_read_rgb(jd_dec *c, JSAMPLE *dst, size_t dst_stride, JDIMENSION nrows, JDIMENSION xskip,
                    JDIMENSION outw, int cmyk) {
    if (setjmp(c->e.jb)) return -1;
    return jd_read_rgb_rows(c, dst, dst_stride, nrows, xskip, outw, cmyk);
}

/* The body of jd_dec_finish. libjpeg-turbo's jpeg_skip_scanlines to the last row marks the input
   finished without decoding it, so skip to the row before the last (entropy decoding only, no
   IDCT) and read the last row. */
static int jd_finish_rows(jd_dec *c) {
    JDIMENSION left = c->d.output_height - c->d.output_scanline;
    JSAMPROW row;
    if (left > 1) jd_skip_rows(c, left - 1);
    if (c->d.output_scanline < c->d.output_height) {
        free(c->scratch);
        c->scratch = (JSAMPLE *)malloc((size_t)c->d.output_width * (size_t)c->d.output_components *
                                       (size_t)(c->d.rec_outbuf_height > 0 ? c->d.rec_outbuf_height : 1));
        if (c->scratch == NULL) {
            c->e.code = JD_ERR_NO_MEMORY;
            return -1;
        }
        row = c->scratch;
        while (c->d.output_scanline < c->d.output_height)
            if (jpeg_read_scanlines(&c->d, &row, 1) == 0) {
                c->e.code = JD_ERR_NO_SCANLINES;
                return -1;
            }
    }
    jpeg_finish_decompress(&c->d);
    return 0;
}

int jd_dec_finish(jd_dec *c) {
    if (setjmp(c->e.jb)) return -1;
    return jd_finish_rows(c);
}

void jd_dec_failure(const jd_dec *c, const jd_budget *b, jd_failure *f) {
    memset(f, 0, sizeof(*f));
    f->code = c->e.code;
    memcpy(f->msg, c->e.msg, sizeof(f->msg));
    f->msg[sizeof(f->msg) - 1] = 0;
    f->width = c->d.image_width;
    f->height = c->d.image_height;
    f->num_components = c->d.num_components;
    f->scans_seen = c->d.input_scan_number;
    f->scan_limit = c->scan_limit;
    if (b != NULL) f->budget = *b;
}

/* ---------------------------------------------------------------------------- compression */

static void jd_encode_body(jd_enc *s, const JSAMPLE *rgb, JDIMENSION w, JDIMENSION h, size_t stride,
                           int quality, int h0, int v0, const uint16_t *luma, const uint16_t *chroma,
                           int optimize) {
    JSAMPROW rowptrs[16];
    JDIMENSION i, n;
    int t, k;
    jpeg_create_compress(&s->c);
    s->created = 1;
    jd_enc_dest(s);
    s->c.image_width = w;
    s->c.image_height = h;
    s->c.input_components = 3;
    s->c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&s->c);
    if (luma == NULL) {
        jpeg_set_quality(&s->c, quality, TRUE);
    } else {
        /* jpeg_set_defaults put the quality-50 tables in slots 0 (luma) and 1 (chroma): overwrite
           their entries; the encoder sends what is there (and SOF1 when an entry exceeds 255) */
        for (t = 0; t < 2; t++) {
            const uint16_t *q = t == 0 ? luma : chroma;
            for (k = 0; k < DCTSIZE2; k++) s->c.quant_tbl_ptrs[t]->quantval[k] = q[k];
            s->c.quant_tbl_ptrs[t]->sent_table = FALSE;
        }
    }
    s->c.dct_method = JDCT_ISLOW;
    s->c.optimize_coding = optimize ? TRUE : FALSE;
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
        for (i = 0; i < n; i++) rowptrs[i] = (JSAMPROW)(rgb + (size_t)(s->c.next_scanline + i) * stride);
        jpeg_write_scanlines(&s->c, rowptrs, n);
    }
    jpeg_finish_compress(&s->c);
}

void jd_enc_reset(jd_enc *s) {
    memset(&s->c, 0, sizeof(s->c));
    s->created = 0;
    s->out = NULL;
    s->outsize = 0;
    s->cap = 0;
    jd_err_init(&s->e, NULL);
    s->c.err = &s->e.pub;
}

#define JD_DEST_START 16384

static void jd_dest_init(j_compress_ptr cinfo) { (void)cinfo; }

/* The buffer is full: double it (realloc keeps what was written, and s->out is always the live
   buffer). */
static boolean jd_dest_grow(j_compress_ptr cinfo) {
    jd_enc *s = (jd_enc *)cinfo;  /* c is the first member of jd_enc */
    size_t cap = s->cap * 2;
    unsigned char *bigger = (unsigned char *)realloc(s->out, cap);
    if (bigger == NULL) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 10);
    s->out = bigger;
    s->dest.next_output_byte = bigger + s->cap;
    s->dest.free_in_buffer = cap - s->cap;
    s->cap = cap;
    return TRUE;
}

static void jd_dest_term(j_compress_ptr cinfo) {
    jd_enc *s = (jd_enc *)cinfo;
    s->outsize = (unsigned long)(s->cap - s->dest.free_in_buffer);
}

void jd_enc_dest(jd_enc *s) {
    s->out = (unsigned char *)malloc(JD_DEST_START);
    if (s->out == NULL) ERREXIT1(&s->c, JERR_OUT_OF_MEMORY, 10);
    s->cap = JD_DEST_START;
    s->outsize = 0;
    s->dest.init_destination = jd_dest_init;
    s->dest.empty_output_buffer = jd_dest_grow;
    s->dest.term_destination = jd_dest_term;
    s->dest.next_output_byte = s->out;
    s->dest.free_in_buffer = s->cap;
    s->c.dest = &s->dest;
}

int jd_encode(jd_enc *s, const JSAMPLE *rgb, JDIMENSION w, JDIMENSION h, size_t stride, int quality,
              int h0, int v0, const uint16_t *luma, const uint16_t *chroma, int optimize) {
    jd_enc_reset(s);
    if (setjmp(s->e.jb)) return -1;
    jd_encode_body(s, rgb, w, h, stride, quality, h0, v0, luma, chroma, optimize);
    return 0;
}

void jd_enc_close(jd_enc *s) {
    if (s->created) jpeg_destroy_compress(&s->c);
    s->created = 0;
    free(s->out);
    s->out = NULL;
}
