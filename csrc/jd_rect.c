/* Partial entropy decoding: the quantized coefficients of a block rectangle of each component,
   decoding as little of the file as its structure allows, one file or a batch on C threads.

   Three ways, chosen from the file's structure (jd_read_rects):
   - STOPPED: one interleaved scan (baseline, or extended-sequential Huffman/arithmetic). The
     decompressor runs in buffered-image mode with raw output (no upsampler or colour converter
     set up), jpeg_consume_input decodes one iMCU row per call, and the loop stops after the last
     row a rectangle needs; jpeg_read_coefficients then hands back the arrays without reading on
     (jdtrans.c, DSTATE_BUFIMAGE). Nothing below that row is read, so no warning is invented.
   - SPLICED: one interleaved Huffman scan whose restart interval divides its MCU rows. Each
     restart segment starts byte-aligned with fresh DC predictions, so the segments that cover the
     rectangles, behind the file's own headers (SOF size patched) and with their RST markers
     renumbered, make a small valid JPEG whose coefficients are the original's at those MCUs.
     Entropy decoding then costs about the rectangle's share of the image.
   - WHOLE: several scans (progressive, non-interleaved sequential): a scan can only be finished
     after every earlier one, so the file is decoded to the end.
*/
#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200809L
#undef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "jdct.h"

#define JD_M_SOS 0xDA
#define JD_M_SOF0 0xC0
#define JD_M_SOF1 0xC1

static void jd_bad_request(jd_dec *c, const char *what) {
    size_t n = strlen(what);
    if (n >= sizeof(c->e.msg)) n = sizeof(c->e.msg) - 1;
    memcpy(c->e.msg, what, n);
    c->e.msg[n] = 0;
    c->e.code = JD_ERR_BAD_REQUEST;
}

static JDIMENSION jd_ceil_div(JDIMENSION a, JDIMENSION b) { return (JDIMENSION)(((uint64_t)a + b - 1) / b); }

/* Every rectangle fits its component and its destination is given: else JD_ERR_BAD_REQUEST. */
static int jd_check_rects(jd_dec *c, const jd_rect *rects, int nrects) {
    int ci;
    if (nrects < 0 || nrects > JD_MAX_COMPS) {
        jd_bad_request(c, "more rectangles than components a JPEG can have");
        return -1;
    }
    for (ci = 0; ci < nrects; ci++) {
        const jd_rect *r = &rects[ci];
        JDIMENSION rows, cols;
        if (r->r1 == r->r0) continue;
        if (ci >= c->d.num_components) {
            jd_bad_request(c, "a rectangle for a component the image does not have");
            return -1;
        }
        jd_dec_blocks(c, ci, &rows, &cols);
        if (r->r1 < r->r0 || r->c1 <= r->c0 || r->r1 > rows || r->c1 > cols) {
            jd_bad_request(c, "a rectangle outside its component's blocks");
            return -1;
        }
        if (r->k < 1 || r->k > DCTSIZE || r->dst == NULL ||
            r->dst_stride < (size_t)(r->c1 - r->c0) * (size_t)(r->k * r->k)) {
            jd_bad_request(c, "a rectangle without room for its coefficients");
            return -1;
        }
    }
    return 0;
}

/* iMCU rows needed by the rectangles (0: none wanted). */
static JDIMENSION jd_rows_needed(const jd_dec *c, const jd_rect *rects, int nrects) {
    JDIMENSION need = 0, n;
    int ci;
    for (ci = 0; ci < nrects; ci++) {
        if (rects[ci].r1 == rects[ci].r0) continue;
        n = jd_ceil_div(rects[ci].r1, (JDIMENSION)c->d.comp_info[ci].v_samp_factor);
        if (n > need) need = n;
    }
    return need;
}

/* Copy the rectangle of component ci, whose block (r, c) is block (r - dr, c - dc) of arrays. */
static void jd_copy_rect(jd_dec *c, jvirt_barray_ptr array, const jd_rect *r, JDIMENSION dr, JDIMENSION dc) {
    JDIMENSION row, b;
    int k = r->k, v;
    size_t kk = (size_t)k * (size_t)k;
    for (row = r->r0; row < r->r1; row++) {
        JBLOCKARRAY blocks = (*c->d.mem->access_virt_barray)((j_common_ptr)&c->d, array, row - dr, 1, FALSE);
        JBLOCKROW src = blocks[0] + (r->c0 - dc);
        JCOEF *dst = r->dst + (size_t)(row - r->r0) * r->dst_stride;
        if (k == DCTSIZE) {
            memcpy(dst, src, (size_t)(r->c1 - r->c0) * sizeof(JBLOCK));
            continue;
        }
        for (b = 0; b < r->c1 - r->c0; b++)
            for (v = 0; v < k; v++)
                memcpy(dst + b * kk + (size_t)v * (size_t)k, src[b] + v * DCTSIZE, (size_t)k * sizeof(JCOEF));
    }
}

/* jd_copy_rect for every wanted component, behind c's own setjmp (0, or -1 with c->e set);
   block (r, c) of component ci is block (r - rows * v, c - cols * h) of arrays[ci]. */
static int jd_copy_rects(jd_dec *c, jvirt_barray_ptr *arrays, const jd_rect *rects, int nrects, const int *h,
                         const int *v, JDIMENSION rows, JDIMENSION cols) {
    int ci;
    if (setjmp(c->e.jb)) return -1;
    for (ci = 0; ci < nrects; ci++)
        if (rects[ci].r1 > rects[ci].r0)
            jd_copy_rect(c, arrays[ci], &rects[ci], rows * (JDIMENSION)v[ci], cols * (JDIMENSION)h[ci]);
    return 0;
}

static void jd_fill_quant(const jd_dec *c, jd_rect_info *info) {
    int ci, k;
    for (ci = 0; ci < c->d.num_components && ci < JD_MAX_COMPS; ci++) {
        const JQUANT_TBL *t = jd_dec_quant_table(c, ci);
        for (k = 0; k < DCTSIZE2; k++) info->quant[ci][k] = t != NULL ? t->quantval[k] : 0;
    }
}

/* STOPPED and WHOLE, inside the caller's setjmp. */
static void jd_decode_rows(jd_dec *c, const jd_rect *rects, int nrects, JDIMENSION need, jd_rect_info *info) {
    jvirt_barray_ptr *arrays;
    int single = !c->d.progressive_mode && c->d.comps_in_scan == c->d.num_components;
    int ci, rc;
    if (single) {
        /* raw output: jinit_master_decompress then sets up no upsampler, colour converter or
           main buffer, which would only cost time here */
        c->d.buffered_image = TRUE;
        c->d.raw_data_out = TRUE;
        jpeg_start_decompress(&c->d);
        while (c->d.input_scan_number == 1 && c->d.input_iMCU_row < need) {
            rc = jpeg_consume_input(&c->d);
            if (rc == JPEG_REACHED_EOI || rc == JPEG_SUSPENDED) break;
        }
        arrays = jpeg_read_coefficients(&c->d);
        info->mode = JD_RECT_STOPPED;
        info->imcu_rows_read = c->d.input_iMCU_row < need ? c->d.input_iMCU_row : need;
        info->mcus_read = (int64_t)info->imcu_rows_read *
                          (c->d.comps_in_scan > 1 ? (int64_t)c->d.MCUs_per_row : (int64_t)c->d.comp_info[0].width_in_blocks *
                                                                                     c->d.comp_info[0].v_samp_factor);
    } else {
        /* jpeg_read_coefficients decodes every scan, the progress monitor keeping the scan budget */
        arrays = jpeg_read_coefficients(&c->d);
        info->mode = JD_RECT_WHOLE;
        info->imcu_rows_read = c->d.total_iMCU_rows;
        info->mcus_read = 0;
    }
    c->coefs = arrays;
    jd_fill_quant(c, info);
    for (ci = 0; ci < nrects; ci++)
        if (rects[ci].r1 > rects[ci].r0) jd_copy_rect(c, arrays[ci], &rects[ci], 0, 0);
}

/* jd_decode_rows behind c's setjmp (a function of its own, so that no local of a caller lives
   across the longjmp). */
static int jd_decode_rows_protected(jd_dec *c, const jd_rect *rects, int nrects, JDIMENSION need,
                                    jd_rect_info *info) {
    if (setjmp(c->e.jb)) return -1;
    jd_decode_rows(c, rects, nrects, need, info);
    return 0;
}

/* ------------------------------------------------------------------------------------------ splicing */

/* The MCU grid of a file's first scan when it can be spliced: one interleaved Huffman scan over
   every component (or one component sampled 1x1), a restart interval that divides MCUs per row. */
typedef struct jd_grid {
    JDIMENSION mcus_per_row, mcu_rows;
    JDIMENSION mcu_w, mcu_h;   /* pixels */
    int h[JD_MAX_COMPS], v[JD_MAX_COMPS];  /* blocks of each component per MCU */
} jd_grid;

static int jd_spliceable(const jd_dec *c, jd_grid *g) {
    const struct jpeg_decompress_struct *d = &c->d;
    int ci;
    unsigned ri = d->restart_interval;
    if (ri == 0 || d->progressive_mode || d->arith_code || d->comps_in_scan != d->num_components ||
        d->num_components > JD_MAX_COMPS)
        return 0;
    if (d->num_components == 1) {
        if (d->comp_info[0].h_samp_factor != 1 || d->comp_info[0].v_samp_factor != 1) return 0;
        g->h[0] = g->v[0] = 1;
        g->mcu_w = g->mcu_h = DCTSIZE;
    } else {
        for (ci = 0; ci < d->num_components; ci++) {
            g->h[ci] = d->comp_info[ci].h_samp_factor;
            g->v[ci] = d->comp_info[ci].v_samp_factor;
        }
        g->mcu_w = (JDIMENSION)(DCTSIZE * d->max_h_samp_factor);
        g->mcu_h = (JDIMENSION)(DCTSIZE * d->max_v_samp_factor);
    }
    g->mcus_per_row = jd_ceil_div(d->image_width, g->mcu_w);
    g->mcu_rows = jd_ceil_div(d->image_height, g->mcu_h);
    return g->mcus_per_row % ri == 0;
}

/* Where the splice reads: the first SOF's height field, the end of the first SOS segment. */
static int jd_splice_offsets(const unsigned char *buf, size_t size, size_t *sof_dims, size_t *scan_start) {
    jd_walker w;
    jd_segment seg;
    *sof_dims = 0;
    jd_walker_init(&w, buf, size, 0);
    while (jd_walker_next(&w, &seg)) {
        if ((seg.marker == JD_M_SOF0 || seg.marker == JD_M_SOF1) && *sof_dims == 0 && seg.length >= 5)
            *sof_dims = seg.offset + 1;
        if (seg.marker == JD_M_SOS) {
            *scan_start = seg.offset + seg.length;
            return *sof_dims != 0 && *scan_start <= size ? 0 : -1;
        }
    }
    return -1;
}

/* The entropy-coded segments of the scan starting at pos (segment s is [starts[s], ends[s]);
   starts and ends hold nmax + 1 entries). Returns the number found, at most nmax. */
static int64_t jd_index_segments(const unsigned char *buf, size_t size, size_t pos, size_t *starts, size_t *ends,
                                 int64_t nmax) {
    int64_t n = 0;
    starts[0] = pos;
    while (pos < size && n < nmax) {
        const unsigned char *hit = (const unsigned char *)memchr(buf + pos, 0xFF, size - pos);
        size_t ff;
        if (hit == NULL) break;
        ff = (size_t)(hit - buf);
        pos = ff + 1;
        while (pos < size && buf[pos] == 0xFF) pos++; /* fill bytes */
        if (pos >= size) break;
        if (buf[pos] == 0x00) {
            pos++;
            continue;
        }
        ends[n++] = ff;
        if (buf[pos] < 0xD0 || buf[pos] > 0xD7) return n; /* EOI, or another marker: end of scan */
        pos++;
        if (n < nmax) starts[n] = pos;
    }
    return n;
}

/* SPLICED: build the small JPEG of the segments covering MCU rows [mr0, mr1) and columns
   [mc0, mc1) and decode it on a second decompressor. Returns 1 when spliced, 0 when the file's
   segments are not what its header promises (the caller then decodes rows instead), -1 on error
   (c->e set). */
static int jd_splice_decode(jd_dec *c, const unsigned char *buf, size_t size, const jd_grid *g, JDIMENSION mr0,
                            JDIMENSION mr1, JDIMENSION mc0, JDIMENSION mc1, const jd_rect *rects, int nrects,
                            const jd_strict *strict, jd_rect_info *info) {
    unsigned ri = c->d.restart_interval;
    int64_t nseg = (int64_t)g->mcus_per_row / ri * g->mcu_rows, found, s, s0, s1;
    size_t sof_dims, scan_start, *starts = NULL, *ends = NULL, pos, len, cap;
    unsigned char *out = NULL;
    JDIMENSION r, height, width, rows_px, cols_px;
    jd_dec sub;
    int rst = 0, result = 0, first = 1;
    if (jd_splice_offsets(buf, size, &sof_dims, &scan_start) != 0) return 0;
    starts = (size_t *)malloc((size_t)(nseg + 2) * sizeof(size_t));
    ends = (size_t *)malloc((size_t)(nseg + 2) * sizeof(size_t));
    if (starts == NULL || ends == NULL) {
        free(starts);
        free(ends);
        c->e.code = JD_ERR_NO_MEMORY;
        return -1;
    }
    found = jd_index_segments(buf, size, scan_start, starts, ends, nseg + 1);
    if (found != nseg) goto done; /* truncated or damaged: let libjpeg decode rows and say so */
    cap = scan_start + 4;
    for (r = mr0; r < mr1; r++) {
        s0 = ((int64_t)r * g->mcus_per_row + mc0) / ri;
        s1 = ((int64_t)r * g->mcus_per_row + mc1) / ri;
        for (s = s0; s < s1; s++) cap += ends[s] - starts[s] + 2;
    }
    out = (unsigned char *)malloc(cap);
    if (out == NULL) {
        c->e.code = JD_ERR_NO_MEMORY;
        result = -1;
        goto done;
    }
    memcpy(out, buf, scan_start);
    rows_px = (mr1 - mr0) * g->mcu_h;
    cols_px = (mc1 - mc0) * g->mcu_w;
    height = mr1 == g->mcu_rows ? c->d.image_height - mr0 * g->mcu_h : rows_px;
    width = mc1 == g->mcus_per_row ? c->d.image_width - mc0 * g->mcu_w : cols_px;
    out[sof_dims] = (unsigned char)(height >> 8);
    out[sof_dims + 1] = (unsigned char)(height & 0xFF);
    out[sof_dims + 2] = (unsigned char)(width >> 8);
    out[sof_dims + 3] = (unsigned char)(width & 0xFF);
    pos = scan_start;
    for (r = mr0; r < mr1; r++) {
        s0 = ((int64_t)r * g->mcus_per_row + mc0) / ri;
        s1 = ((int64_t)r * g->mcus_per_row + mc1) / ri;
        for (s = s0; s < s1; s++) {
            if (!first) {
                out[pos++] = 0xFF;
                out[pos++] = (unsigned char)(0xD0 + (rst++ & 7));
            }
            first = 0;
            len = ends[s] - starts[s];
            memcpy(out + pos, buf + starts[s], len);
            pos += len;
        }
    }
    out[pos++] = 0xFF;
    out[pos++] = 0xD9;

    result = -1;
    if (jd_dec_open(&sub, out, pos, strict, 0) == 0 && jd_dec_read_coefficients(&sub) == 0 &&
        jd_copy_rects(&sub, sub.coefs, rects, nrects, g->h, g->v, mr0, mc0) == 0) {
        result = 1;
        info->mode = JD_RECT_SPLICED;
        info->mcus_read = (int64_t)(mr1 - mr0) * (mc1 - mc0);
        info->imcu_rows_read = 0;
    } else {
        c->e.code = sub.e.code;
        memcpy(c->e.msg, sub.e.msg, sizeof(c->e.msg));
    }
    /* the spliced stream starts with this file's own header: its warnings are c's too, so the
       counts are the sub-decoder's, not a sum */
    c->e.warnings = sub.e.warnings;
    c->e.tolerated = sub.e.tolerated;
    jd_dec_close(&sub);
done:
    free(out);
    free(starts);
    free(ends);
    return result;
}

/* The MCU rectangle covering every component's rectangle, columns widened to restart segments. */
static void jd_mcu_cover(const jd_grid *g, unsigned ri, const jd_rect *rects, int nrects, JDIMENSION *mr0,
                         JDIMENSION *mr1, JDIMENSION *mc0, JDIMENSION *mc1) {
    int ci, any = 0;
    JDIMENSION a0 = 0, a1 = 0, b0 = 0, b1 = 0, x;
    for (ci = 0; ci < nrects; ci++) {
        const jd_rect *r = &rects[ci];
        JDIMENSION r0, r1, c0, c1;
        if (r->r1 == r->r0) continue;
        r0 = r->r0 / (JDIMENSION)g->v[ci];
        r1 = jd_ceil_div(r->r1, (JDIMENSION)g->v[ci]);
        c0 = r->c0 / (JDIMENSION)g->h[ci];
        c1 = jd_ceil_div(r->c1, (JDIMENSION)g->h[ci]);
        if (!any || r0 < a0) a0 = r0;
        if (!any || r1 > a1) a1 = r1;
        if (!any || c0 < b0) b0 = c0;
        if (!any || c1 > b1) b1 = c1;
        any = 1;
    }
    if (a1 > g->mcu_rows) a1 = g->mcu_rows;
    b0 = b0 / ri * ri;
    x = jd_ceil_div(b1, ri) * ri;
    b1 = x > g->mcus_per_row ? g->mcus_per_row : x;
    *mr0 = a0;
    *mr1 = a1;
    *mc0 = b0;
    *mc1 = b1;
}

static int jd_read_rects_body(jd_dec *c, const unsigned char *buf, size_t size, const jd_strict *strict,
                              const jd_rect *rects,
                              int nrects, jd_rect_info *info) {
    JDIMENSION need = jd_rows_needed(c, rects, nrects);
    jd_grid g;
    if (need == 0) {
        info->mode = JD_RECT_NONE;
        jd_fill_quant(c, info);  /* the slots' tables: no scan was started */
        return 0;
    }
    if (jd_spliceable(c, &g)) {
        JDIMENSION mr0, mr1, mc0, mc1;
        jd_mcu_cover(&g, c->d.restart_interval, rects, nrects, &mr0, &mr1, &mc0, &mc1);
        /* worth it only when it decodes fewer MCUs than stopping after the last row would */
        if ((int64_t)(mr1 - mr0) * (mc1 - mc0) < (int64_t)mr1 * g.mcus_per_row) {
            int rc = jd_splice_decode(c, buf, size, &g, mr0, mr1, mc0, mc1, rects, nrects, strict, info);
            if (rc != 0) {
                jd_fill_quant(c, info);  /* no scan started on c: its slots' tables, the only ones */
                return rc > 0 ? 0 : -1;
            }
        }
    }
    return jd_decode_rows_protected(c, rects, nrects, need, info);
}

int jd_read_rects(jd_dec *c, const unsigned char *buf, size_t size, const jd_strict *strict, int64_t max_pixels,
                  const jd_rect *rects, int nrects, jd_budget *budget, jd_rect_info *info) {
    memset(info, 0, sizeof(*info));
    memset(budget, 0, sizeof(*budget));
    if (jd_dec_open(c, buf, size, strict, 0) != 0) return -1;
    info->num_components = c->d.num_components;
    info->imcu_rows = c->d.total_iMCU_rows;
    if (jd_dec_check_budget(c, max_pixels, buf, size, budget) != 0) return -1;
    if (jd_check_rects(c, rects, nrects) != 0) return -1;
    return jd_read_rects_body(c, buf, size, strict, rects, nrects, info);
}

/* ------------------------------------------------------------------------------------------ batch */

typedef struct jd_batch {
    jd_rect_job *jobs;
    int n, next;
    const jd_strict *strict;
    int64_t max_pixels;
    pthread_mutex_t lock;
} jd_batch;

static void jd_run_job(jd_rect_job *job, const jd_strict *strict, int64_t max_pixels) {
    jd_dec c;
    jd_budget budget;
    job->rc = jd_read_rects(&c, job->data, job->size, strict, max_pixels, job->rects, job->nrects, &budget,
                            &job->info);
    job->warnings = c.e.warnings;
    if (job->rc != 0) jd_dec_failure(&c, &budget, &job->failure);
    jd_dec_close(&c);
}

static void *jd_batch_worker(void *arg) {
    jd_batch *b = (jd_batch *)arg;
    for (;;) {
        int i;
        pthread_mutex_lock(&b->lock);
        i = b->next++;
        pthread_mutex_unlock(&b->lock);
        if (i >= b->n) break;
        jd_run_job(&b->jobs[i], b->strict, b->max_pixels);
    }
    return NULL;
}

int jd_read_rects_batch(jd_rect_job *jobs, int n, const jd_strict *strict, int64_t max_pixels, int threads) {
    jd_batch b;
    pthread_t tids[64];
    int started = 0, t;
    if (threads > n) threads = n;
    if (threads > 64) threads = 64;
    if (threads < 1) threads = 1;
    b.jobs = jobs;
    b.n = n;
    b.next = 0;
    b.strict = strict;
    b.max_pixels = max_pixels;
    if (threads == 1 || pthread_mutex_init(&b.lock, NULL) != 0) {
        for (t = 0; t < n; t++) jd_run_job(&jobs[t], strict, max_pixels);
        return 1;
    }
    for (t = 0; t < threads - 1; t++) {
        if (pthread_create(&tids[t], NULL, jd_batch_worker, &b) != 0) break;
        started++;
    }
    jd_batch_worker(&b);  /* the calling thread works too (and alone if no thread could start) */
    for (t = 0; t < started; t++) pthread_join(tids[t], NULL);
    pthread_mutex_destroy(&b.lock);
    return started + 1;
}
