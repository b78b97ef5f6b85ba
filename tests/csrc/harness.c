/* Drives every function of csrc/ over JPEG files, for sanitizers (make asan) and valgrind.
 *
 * For each file: the marker walker (both modes) and the scan count; the header and budget;
 * the coefficients (every component, its quantization table); RGB decodes at several scales,
 * whole and a region (crop + skip, then read on to EOI); rectangles of coefficients (one file,
 * and a batch of it on 3 threads); a lossless transcode (with restart markers and markers kept)
 * and the coefficients written back; then, on the decoded pixels, the reference encoder (with
 * given tables too), the forward DCT of a 16-aligned crop and a bilinear resize. Errors are expected (the inputs include
 * broken files) and only counted: what this checks is that no path reads or writes out of
 * bounds, leaks, or does undefined arithmetic, which the sanitizers report and abort on.
 *
 *   usage: harness FILE...      (prints one summary line; exit status 0 unless a sanitizer fires)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jdct.h"

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;
    if (f == NULL) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        /* exactly n bytes, so that reading one byte past the data is caught (1 for an empty file) */
        buf = (unsigned char *)malloc(n > 0 ? (size_t)n : 1);
        if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *size = (size_t)n;
    }
    fclose(f);
    return buf;
}

static int walk(const unsigned char *data, size_t size) {
    jd_walker w;
    jd_segment seg;
    int mode, n = 0;
    for (mode = 0; mode < 2; mode++) {
        jd_walker_init(&w, data, size, mode);
        while (jd_walker_next(&w, &seg)) {
            if (seg.offset > size || seg.length > size - seg.offset) abort(); /* a walker bug */
            n++;
        }
    }
    return n + (int)jd_count_scans(data, size);
}

static int coefficients(const unsigned char *data, size_t size, int strict) {
    jd_dec c;
    jd_budget b;
    int ci, ok = -1;
    jd_strict st;
    memset(&st, 0, sizeof(st));
    st.on = strict;
    st.ntolerate = 2;
    st.tolerate[0].substring = "extraneous bytes before marker";
    st.tolerate[0].anywhere = 0;
    st.tolerate[0].at_most = -1;
    st.tolerate[1].substring = "extraneous bytes before marker";
    st.tolerate[1].anywhere = 1;
    st.tolerate[1].at_most = 32;
    if (jd_dec_open(&c, data, size, &st, JD_SAVE_EXIF) == 0 && jd_dec_check_budget(&c, 1 << 24, data, size, &b) == 0 &&
        jd_dec_read_coefficients(&c) == 0) {
        ok = 0;
        for (ci = 0; ci < c.d.num_components && ok == 0; ci++) {
            JDIMENSION rows, cols;
            JCOEF *dst;
            jd_dec_blocks(&c, ci, &rows, &cols);
            dst = (JCOEF *)malloc((size_t)rows * cols * DCTSIZE2 * sizeof(JCOEF) + 1);
            if (dst == NULL || jd_dec_copy_component(&c, ci, dst, rows, cols) != 0) ok = -1;
            (void)jd_dec_quant_table(&c, ci);
            free(dst);
        }
    }
    jd_dec_close(&c);
    return ok;
}

/* Rectangles (a third of each component, from its middle; k 8 then 3) read alone and in a batch
   of 4 copies on 3 threads. */
static int rects(const unsigned char *data, size_t size) {
    jd_dec c;
    jd_budget b;
    jd_rect_info info;
    jd_rect r[JD_MAX_COMPS];
    jd_rect_job jobs[4];
    JCOEF *buf[JD_MAX_COMPS] = {NULL, NULL, NULL, NULL};
    int ci, nc = 0, ok = -1, j, k;
    memset(r, 0, sizeof(r));
    if (jd_dec_open(&c, data, size, NULL, 0) == 0) {
        nc = c.d.num_components < JD_MAX_COMPS ? c.d.num_components : JD_MAX_COMPS;
        for (ci = 0; ci < nc; ci++) {
            JDIMENSION rows, cols;
            jd_dec_blocks(&c, ci, &rows, &cols);
            r[ci].r0 = rows / 3;
            r[ci].r1 = rows / 3 + (rows + 2) / 3;
            r[ci].c0 = cols / 3;
            r[ci].c1 = cols / 3 + (cols + 2) / 3;
            if (r[ci].r1 > rows) r[ci].r1 = rows;
            if (r[ci].c1 > cols) r[ci].c1 = cols;
            r[ci].k = 8;
            r[ci].dst_stride = (size_t)(r[ci].c1 - r[ci].c0) * DCTSIZE2;
            /* exactly the room needed: one element more written would be caught */
            buf[ci] = (JCOEF *)malloc((size_t)(r[ci].r1 - r[ci].r0) * r[ci].dst_stride * sizeof(JCOEF) + 1);
            r[ci].dst = buf[ci];
        }
    }
    jd_dec_close(&c);
    for (k = 8; nc > 0 && k >= 3; k -= 5) {
        for (ci = 0; ci < nc; ci++) {
            r[ci].k = k;
            r[ci].dst_stride = (size_t)(r[ci].c1 - r[ci].c0) * (size_t)(k * k);
        }
        if (jd_read_rects(&c, data, size, NULL, 1 << 24, r, nc, &b, &info) == 0) ok = 0;
        jd_dec_close(&c);
    }
    for (j = 0; nc > 0 && j < 4; j++) {
        jobs[j].data = data;
        jobs[j].size = size;
        jobs[j].nrects = nc;
        memcpy(jobs[j].rects, r, sizeof(r));
        for (ci = 0; ci < nc && j > 0; ci++) jobs[j].rects[ci].r1 = jobs[j].rects[ci].r0; /* only the first writes */
    }
    if (nc > 0) jd_read_rects_batch(jobs, 4, NULL, 1 << 24, 3);
    for (ci = 0; ci < JD_MAX_COMPS; ci++) free(buf[ci]);
    return ok;
}

/* Transcode (restart markers, markers kept), then write the coefficients read back. */
static int writing(const unsigned char *data, size_t size) {
    jd_xcode t;
    jd_budget b;
    jd_dec c;
    jd_coef_plane planes[JD_MAX_COMPS];
    JCOEF *bufs[JD_MAX_COMPS] = {NULL, NULL, NULL, NULL};
    uint16_t q[JD_MAX_COMPS][64];
    int ok = -1, ci, k, nc = 0;
    if (jd_transcode(&t, data, size, NULL, 1 << 24, 1, 2, 1, &b) == 0) ok = 0;
    jd_xcode_close(&t);
    if (jd_dec_open(&c, data, size, NULL, 0) == 0 && jd_dec_check_budget(&c, 1 << 24, data, size, &b) == 0 &&
        jd_dec_read_coefficients(&c) == 0 && c.d.num_components <= JD_MAX_COMPS) {
        nc = c.d.num_components;
        for (ci = 0; ci < nc; ci++) {
            JDIMENSION rows, cols;
            const JQUANT_TBL *tbl = jd_dec_quant_table(&c, ci);
            jd_dec_blocks(&c, ci, &rows, &cols);
            bufs[ci] = (JCOEF *)malloc((size_t)rows * cols * DCTSIZE2 * sizeof(JCOEF) + 1);
            if (bufs[ci] == NULL || jd_dec_copy_component(&c, ci, bufs[ci], rows, cols) != 0) nc = 0;
            for (k = 0; k < 64; k++) q[ci][k] = tbl != NULL && tbl->quantval[k] ? tbl->quantval[k] : 1;
            planes[ci].coefs = bufs[ci];
            planes[ci].bh = rows;
            planes[ci].bw = cols;
            planes[ci].h = c.d.comp_info[ci].h_samp_factor;
            planes[ci].v = c.d.comp_info[ci].v_samp_factor;
            planes[ci].quant = q[ci];
        }
        if (nc > 0 && jd_write_coefficients(&t, c.d.image_width, c.d.image_height, c.d.jpeg_color_space, planes, nc,
                                            1, 3) != 0)
            ok = -1;
        jd_xcode_close(&t);
    }
    jd_dec_close(&c);
    for (ci = 0; ci < JD_MAX_COMPS; ci++) free(bufs[ci]);
    return ok;
}

/* Decode at scale m/8 (whole image, or the region x0,y0 w x h of the output); returns the
   pixels (caller frees) or NULL. */
static uint8_t *decode(const unsigned char *data, size_t size, int m, int region, int *W, int *H) {
    jd_dec c;
    jd_budget b;
    uint8_t *out = NULL;
    JDIMENSION x = 0, y = 0, w, h, xoff = 0, cropw;
    int cmyk;
    if (jd_dec_open(&c, data, size, NULL, 0) != 0 || jd_dec_check_budget(&c, 1 << 24, data, size, &b) != 0) goto done;
    cmyk = c.d.jpeg_color_space == JCS_CMYK || c.d.jpeg_color_space == JCS_YCCK;
    c.d.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    c.d.dct_method = JDCT_ISLOW;
    c.d.scale_num = (unsigned)m;
    c.d.scale_denom = 8;
    if (jd_dec_start(&c) != 0) goto done;
    w = c.d.output_width;
    h = c.d.output_height;
    if (region && w > 2 && h > 2) {
        x = w / 3;
        y = h / 3;
        w = w - x - 1;
        h = h - y - 1;
        if (c.d.max_h_samp_factor <= 2 && c.d.max_v_samp_factor <= 2) {
            xoff = x > 4u * (JDIMENSION)m ? x - 4u * (JDIMENSION)m : 0;
            cropw = c.d.output_width - xoff;
            if (jd_dec_crop(&c, &xoff, &cropw) != 0) goto done;
        }
        if (jd_dec_skip(&c, y) != 0) goto done;
    }
    out = (uint8_t *)malloc((size_t)w * h * 3);
    if (out == NULL || jd_dec_read_rgb(&c, out, (size_t)w * 3, h, x - xoff, w, cmyk) != 0 ||
        (region && jd_dec_finish(&c) != 0)) {
        free(out);
        out = NULL;
        goto done;
    }
    *W = (int)w;
    *H = (int)h;
done:
    jd_dec_close(&c);
    return out;
}

static void pixel_math(const uint8_t *rgb, int W, int H, unsigned seed) {
    uint16_t ql[64], qc[64];
    int i, S = (W < H ? W : H) / 16 * 16, dw = 1 + (int)(seed % 97), dh = 1 + (int)(seed / 97 % 89);
    jd_enc s;
    uint8_t *dst = (uint8_t *)malloc((size_t)dw * dh * 3);
    for (i = 0; i < 64; i++) {
        ql[i] = (uint16_t)(1 + (seed + (unsigned)i * 7) % 255);
        qc[i] = (uint16_t)(1 + (seed + (unsigned)i * 13) % 255);
    }
    if (jd_encode(&s, rgb, (JDIMENSION)W, (JDIMENSION)H, (size_t)W * 3, 1 + (int)(seed % 100), 2, 2, NULL, NULL, 0) == 0 &&
        s.outsize < 4)
        abort();
    jd_enc_close(&s);
    if (jd_encode(&s, rgb, (JDIMENSION)W, (JDIMENSION)H, (size_t)W * 3, 0, 1, 1, ql, qc, 1) == 0 && s.outsize < 4)
        abort();
    jd_enc_close(&s);
    if (S >= 16) {
        /* a crop of S x S at the top left: row stride W * 3 is not what jd_forward_dct takes, so copy */
        uint8_t *crop = (uint8_t *)malloc((size_t)S * S * 3);
        int16_t *y = (int16_t *)malloc((size_t)(S / 8) * (S / 8) * 64 * sizeof(int16_t));
        int16_t *cb = (int16_t *)malloc((size_t)(S / 16) * (S / 16) * 64 * sizeof(int16_t));
        int16_t *cr = (int16_t *)malloc((size_t)(S / 16) * (S / 16) * 64 * sizeof(int16_t));
        int r;
        for (r = 0; r < S; r++) memcpy(crop + (size_t)r * S * 3, rgb + (size_t)r * W * 3, (size_t)S * 3);
        if (jd_forward_dct(crop, S, S, ql, qc, y, cb, cr) != 0) abort();
        free(crop);
        free(y);
        free(cb);
        free(cr);
    }
    if (dst != NULL) {
        float x0 = (float)(seed % 5) * 0.3f, y0 = (float)(seed % 3) * 0.4f;
        float x1 = (float)W - (float)(seed % 2) * 0.25f, y1 = (float)H;
        if (x0 >= x1) x0 = 0;
        if (y0 >= y1) y0 = 0;
        if (jd_resize_bilinear(rgb, W, H, x0, y0, x1, y1, dst, dw, dh) != 0) abort();
        free(dst);
    }
}

int main(int argc, char **argv) {
    int i, files = 0, coef_ok = 0, decoded = 0, segments = 0, rect_ok = 0, write_ok = 0;
    static const int scales[] = {8, 4, 3, 1, 16};
    for (i = 1; i < argc; i++) {
        size_t size = 0;
        unsigned char *data = read_file(argv[i], &size);
        int k;
        if (data == NULL) continue;
        files++;
        segments += walk(data, size);
        coef_ok += coefficients(data, size, 0) == 0;
        (void)coefficients(data, size, 1);
        rect_ok += rects(data, size) == 0;
        write_ok += writing(data, size) == 0;
        for (k = 0; k < 5; k++) {
            int W = 0, H = 0;
            uint8_t *rgb = decode(data, size, scales[k], k % 2, &W, &H);
            if (rgb == NULL) continue;
            decoded++;
            if (k == 0) pixel_math(rgb, W, H, (unsigned)(i * 2654435761u >> 8));
            free(rgb);
        }
        free(data);
    }
    printf("harness: %d files, %d segments walked, %d coefficient reads ok, %d decodes ok, %d rectangle reads "
           "ok, %d transcodes ok\n", files, segments, coef_ok, decoded, rect_ok, write_ok);
    return 0;
}
