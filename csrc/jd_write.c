/* Writing JPEGs from quantized coefficients: lossless transcoding of any DCT-based JPEG to
   baseline Huffman, and coefficients held in plain arrays to a JPEG file.

   Both go through jpeg_write_coefficients (jctrans.c), which entropy-codes the given blocks
   without any DCT: the coefficients read back are the ones written. Its defaults (jcparam.c
   jpeg_set_defaults) are sequential Huffman coding, one interleaved scan, no restart markers;
   an entry of a quantization table over 255 makes the frame SOF1 instead of SOF0. */
#include <stdlib.h>
#include <string.h>

#include "jdct.h"

#include <jerror.h>

/* What sequential Huffman coding of 8-bit data can hold (jchuff.c: MAX_COEF_BITS = 10): AC
   magnitudes up to 1023, DC differences under 2048 in magnitude, which DC values in
   -1024..1023 guarantee (the whole range of 8-bit samples: a black block's DC is -1024 at q = 1).
   Arithmetic coding holds larger values, which a damaged file can decode to; libjpeg-turbo's
   SIMD Huffman encoder does not check, and would write them wrongly. */
#define JD_AC_MAX 1023
#define JD_DC_MIN (-1024)
#define JD_DC_MAX 1023

static int jd_blocks_in_range(const JCOEF *c, size_t nblocks) {
    size_t b;
    int k;
    for (b = 0; b < nblocks; b++, c += DCTSIZE2) {
        if (c[0] < JD_DC_MIN || c[0] > JD_DC_MAX) return 0;
        for (k = 1; k < DCTSIZE2; k++)
            if (c[k] > JD_AC_MAX || c[k] < -JD_AC_MAX) return 0;
    }
    return 1;
}

#define JD_APP0 0xE0
#define JD_APP14 0xEE
#define JD_COM 0xFE

static void jd_xcode_reset(jd_xcode *t) {
    memset(&t->src, 0, sizeof(t->src));
    t->src.created = 0;
    jd_enc_reset(&t->dst);
}

void jd_xcode_close(jd_xcode *t) {
    jd_enc_close(&t->dst);
    jd_dec_close(&t->src);
}

/* The JFIF APP0 and Adobe APP14 markers libjpeg writes itself: copying them would duplicate them. */
static int jd_written_by_libjpeg(const jpeg_saved_marker_ptr m) {
    if (m->marker == JD_APP0 && m->data_length >= 5 && memcmp(m->data, "JFIF\0", 5) == 0) return 1;
    if (m->marker == JD_APP14 && m->data_length >= 5 && memcmp(m->data, "Adobe", 5) == 0) return 1;
    return 0;
}

static void jd_transcode_body(jd_xcode *t, int optimize, unsigned restart_interval, int keep_markers) {
    jvirt_barray_ptr *arrays;
    jpeg_saved_marker_ptr m;
    int ci;
    JDIMENSION r;
    arrays = jpeg_read_coefficients(&t->src.d);
    t->src.coefs = arrays;
    for (ci = 0; ci < t->src.d.num_components; ci++) {
        const jpeg_component_info *comp = &t->src.d.comp_info[ci];
        for (r = 0; r < comp->height_in_blocks; r++) {
            JBLOCKARRAY row = (*t->src.d.mem->access_virt_barray)((j_common_ptr)&t->src.d, arrays[ci], r, 1, FALSE);
            if (!jd_blocks_in_range(row[0][0], comp->width_in_blocks)) ERREXIT(&t->src.d, JERR_BAD_DCT_COEF);
        }
    }
    jpeg_create_compress(&t->dst.c);
    t->dst.created = 1;
    jpeg_copy_critical_parameters(&t->src.d, &t->dst.c);
    t->dst.c.optimize_coding = optimize ? TRUE : FALSE;
    t->dst.c.restart_interval = restart_interval;
    jd_enc_dest(&t->dst);
    jpeg_write_coefficients(&t->dst.c, arrays);
    if (keep_markers)
        for (m = t->src.d.marker_list; m != NULL; m = m->next)
            if (!jd_written_by_libjpeg(m)) jpeg_write_marker(&t->dst.c, m->marker, m->data, m->data_length);
    jpeg_finish_compress(&t->dst.c);
}

int jd_transcode(jd_xcode *t, const unsigned char *buf, size_t size, const jd_strict *strict, int64_t max_pixels,
                 int optimize, unsigned restart_interval, int keep_markers, jd_budget *budget) {
    jd_xcode_reset(t);
    memset(budget, 0, sizeof(*budget));
    if (jd_dec_open(&t->src, buf, size, strict, keep_markers ? JD_SAVE_ALL : 0) != 0) return -1;
    if (jd_dec_check_budget(&t->src, max_pixels, buf, size, budget) != 0) return -1;
    /* the compressor reports through the decompressor's error manager: one setjmp for both */
    t->dst.c.err = &t->src.e.pub;
    if (setjmp(t->src.e.jb)) return -1;
    jd_transcode_body(t, optimize, restart_interval, keep_markers);
    return 0;
}

/* ------------------------------------------------------------------------------------------ write */

static void jd_write_body(jd_xcode *t, JDIMENSION width, JDIMENSION height, J_COLOR_SPACE cs,
                          const jd_coef_plane *planes, int nc, int optimize, unsigned restart_interval,
                          const int *slot) {
    struct jpeg_compress_struct *c = &t->dst.c;
    jvirt_barray_ptr arrays[JD_MAX_COMPS];
    int ci, k, max_h = 1, max_v = 1;
    JDIMENSION r;
    jpeg_create_compress(c);
    t->dst.created = 1;
    c->image_width = width;
    c->image_height = height;
    c->input_components = nc;
    c->in_color_space = cs;
    jpeg_set_defaults(c);
    jpeg_set_colorspace(c, cs);
    c->optimize_coding = optimize ? TRUE : FALSE;
    c->restart_interval = restart_interval;
    for (ci = 0; ci < nc; ci++) {
        if (planes[ci].h > max_h) max_h = planes[ci].h;
        if (planes[ci].v > max_v) max_v = planes[ci].v;
    }
    for (ci = 0; ci < nc; ci++) {
        jpeg_component_info *comp = &c->comp_info[ci];
        JQUANT_TBL **tbl = &c->quant_tbl_ptrs[slot[ci]];
        comp->h_samp_factor = planes[ci].h;
        comp->v_samp_factor = planes[ci].v;
        comp->quant_tbl_no = slot[ci];
        if (*tbl == NULL) *tbl = jpeg_alloc_quant_table((j_common_ptr)c);
        for (k = 0; k < DCTSIZE2; k++) (*tbl)->quantval[k] = planes[ci].quant[k];
        (*tbl)->sent_table = FALSE;
    }
    for (ci = 0; ci < nc; ci++) {
        /* jcmaster.c initial_setup's block counts, padded to whole MCUs as jctrans.c expects */
        JDIMENSION bw = (JDIMENSION)(((uint64_t)width * planes[ci].h + 8u * max_h - 1) / (8u * max_h));
        JDIMENSION bh = (JDIMENSION)(((uint64_t)height * planes[ci].v + 8u * max_v - 1) / (8u * max_v));
        bw = (bw + (JDIMENSION)planes[ci].h - 1) / (JDIMENSION)planes[ci].h * (JDIMENSION)planes[ci].h;
        bh = (bh + (JDIMENSION)planes[ci].v - 1) / (JDIMENSION)planes[ci].v * (JDIMENSION)planes[ci].v;
        arrays[ci] = (*c->mem->request_virt_barray)((j_common_ptr)c, JPOOL_IMAGE, TRUE, bw, bh,
                                                    (JDIMENSION)planes[ci].v);
    }
    jd_enc_dest(&t->dst);
    /* realizes the arrays: they are filled after it and before the compression runs */
    jpeg_write_coefficients(c, arrays);
    for (ci = 0; ci < nc; ci++) {
        const jd_coef_plane *p = &planes[ci];
        for (r = 0; r < p->bh; r++) {
            JBLOCKARRAY row = (*c->mem->access_virt_barray)((j_common_ptr)c, arrays[ci], r, 1, TRUE);
            memcpy(row[0], p->coefs + (size_t)r * p->bw * DCTSIZE2, (size_t)p->bw * sizeof(JBLOCK));
        }
    }
    jpeg_finish_compress(c);
}

static int jd_write_bad(jd_xcode *t, const char *what) {
    size_t n = strlen(what);
    if (n >= sizeof(t->dst.e.msg)) n = sizeof(t->dst.e.msg) - 1;
    memcpy(t->dst.e.msg, what, n);
    t->dst.e.msg[n] = 0;
    t->dst.e.code = JD_ERR_BAD_REQUEST;
    return -1;
}

int jd_write_coefficients(jd_xcode *t, JDIMENSION width, JDIMENSION height, J_COLOR_SPACE cs,
                          const jd_coef_plane *planes, int nc, int optimize, unsigned restart_interval) {
    int ci, cj, nslots = 0, slot[JD_MAX_COMPS], max_h = 1, max_v = 1;
    JDIMENSION r;
    static const int comps_of[] = {0, 1, 3, 3, 4, 4}; /* JCS_UNKNOWN, GRAYSCALE, RGB, YCbCr, CMYK, YCCK */
    jd_xcode_reset(t);
    if ((int)cs < 1 || (int)cs > 5 || comps_of[cs] != nc)
        return jd_write_bad(t, "the colour space does not have that many components");
    if (width < 1 || height < 1 || width > JPEG_MAX_DIMENSION || height > JPEG_MAX_DIMENSION)
        return jd_write_bad(t, "image dimensions must be 1..65500 pixels");
    for (ci = 0; ci < nc; ci++) {
        if (planes[ci].h < 1 || planes[ci].h > 4 || planes[ci].v < 1 || planes[ci].v > 4)
            return jd_write_bad(t, "sampling factors must be 1..4");
        if (planes[ci].h > max_h) max_h = planes[ci].h;
        if (planes[ci].v > max_v) max_v = planes[ci].v;
    }
    for (ci = 0; ci < nc; ci++) {
        const jd_coef_plane *p = &planes[ci];
        JDIMENSION bw = (JDIMENSION)(((uint64_t)width * p->h + 8u * max_h - 1) / (8u * max_h));
        JDIMENSION bh = (JDIMENSION)(((uint64_t)height * p->v + 8u * max_v - 1) / (8u * max_v));
        JDIMENSION pw = (bw + (JDIMENSION)p->h - 1) / (JDIMENSION)p->h * (JDIMENSION)p->h;
        JDIMENSION ph = (bh + (JDIMENSION)p->v - 1) / (JDIMENSION)p->v * (JDIMENSION)p->v;
        if (p->bw < bw || p->bh < bh || p->bw > pw || p->bh > ph || p->coefs == NULL || p->quant == NULL)
            return jd_write_bad(t, "a component's blocks do not fit the image size and sampling");
        for (cj = 0; cj < DCTSIZE2; cj++)
            if (p->quant[cj] == 0) return jd_write_bad(t, "quantization table entries must be 1..65535");
        for (r = 0; r < bh; r++)
            if (!jd_blocks_in_range(p->coefs + (size_t)r * p->bw * DCTSIZE2, bw))
                return jd_write_bad(t, "a coefficient is outside what 8-bit sequential JPEG can code (AC -1023..1023, "
                                       "DC -1024..1023)");
        /* identical tables share a slot */
        slot[ci] = -1;
        for (cj = 0; cj < ci; cj++)
            if (memcmp(planes[cj].quant, p->quant, DCTSIZE2 * sizeof(uint16_t)) == 0) slot[ci] = slot[cj];
        if (slot[ci] < 0) {
            if (nslots == NUM_QUANT_TBLS) return jd_write_bad(t, "more than 4 distinct quantization tables");
            slot[ci] = nslots++;
        }
    }
    if (setjmp(t->dst.e.jb)) return -1;
    jd_write_body(t, width, height, cs, planes, nc, optimize, restart_interval, slot);
    return 0;
}
