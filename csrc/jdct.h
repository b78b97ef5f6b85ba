/* The C layer of jdct over libjpeg-turbo: bytes in, arrays and facts out.
 *
 * Bound to Python by _decoder.pyx (declarations in jdct_c.pxd); nothing here knows Python.
 * Every function that may fail returns 0 on success and -1 on failure, the reason being the
 * jd_err's `code` (JD_ERR_*) and, for libjpeg's own errors, its message in `msg`. Wording a
 * failure for users is the binding's job, so no user-facing sentence lives in C.
 *
 * libjpeg reports errors by calling error_exit, which must not return: ours longjmps back into
 * the jd_* wrapper that made the libjpeg call (each wrapper does its own setjmp), so no longjmp
 * ever crosses a Cython frame, and the caller always ends with jd_dec_close / jd_enc_close,
 * which release every libjpeg object on every path. libjpeg never prints and never exits.
 */
#ifndef JDCT_H
#define JDCT_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* jpeglib.h uses FILE without including stdio.h */

#include <jpeglib.h>

/* ------------------------------------------------------------------------------------------
 * Limits: the one definition of each (the binding exposes them to Python).
 * ------------------------------------------------------------------------------------------ */

/* Images whose header declares more pixels (width * height) are refused before any allocation. */
#define JD_DEFAULT_MAX_PIXELS 100000000LL

/* Coefficient memory guard: a conforming image stores at most a few padded full-resolution
   planes (one per component, 4 for the colour spaces handled), so more than
   4 * max_pixels + JD_COEF_SLACK coefficients is refused; the slack covers the MCU padding of
   tiny images with large sampling factors. */
#define JD_COEF_SLACK (1LL << 22)

/* A progressive scan walks every block of the image (~10-15 ns a block): a small file can carry
   hundreds of scans over a huge image. Scans are capped so that scans x blocks stays near
   JD_SCAN_BLOCK_BUDGET block visits (about 1.5 s of decoding), but never below
   JD_MIN_SCAN_LIMIT, which real encoders never approach (jpegtran's progressive script has 10
   scans, mozjpeg's up to ~20), and never above JD_MAX_SCANS. */
#define JD_SCAN_BLOCK_BUDGET 100000000LL
#define JD_MIN_SCAN_LIMIT 64
#define JD_MAX_SCANS 500

/* The most scans a progressive image of `blocks` 8x8 blocks (all components) may carry. */
int64_t jd_scan_limit(int64_t blocks);

/* ------------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------------ */

enum jd_code {
    JD_OK = 0,
    JD_ERR_LIBJPEG,        /* libjpeg failed (or warned, in strict mode): its words in msg */
    JD_ERR_NO_MEMORY,      /* a buffer of ours could not be allocated */
    JD_ERR_NO_SCANLINES,   /* libjpeg returned no scanline where one was due */
    JD_ERR_TOO_MANY_PIXELS,
    JD_ERR_TOO_MANY_COEFS,
    JD_ERR_TOO_MANY_SCANS,
    JD_ERR_BAD_REQUEST     /* the caller's request does not fit the image (a rectangle outside
                              a component, a component the image lacks, wrong array sizes) */
};

/* A libjpeg warning the caller lets pass in strict mode: its message holds substring, it came
   before the first scan (or anywhere), and its first numeric parameter (msg_parm.i[0], e.g. the
   byte count of "N extraneous bytes before marker") is at most at_most (< 0: any). Which
   warnings lose nothing is the caller's call. */
typedef struct jd_tolerance {
    const char *substring;
    int anywhere;
    long at_most;
} jd_tolerance;

/* How libjpeg's warnings are taken: counted (on = 0), or the first one not tolerated is an error. */
#define JD_MAX_TOLERATED 8
typedef struct jd_strict {
    int on;
    int ntolerate;
    jd_tolerance tolerate[JD_MAX_TOLERATED];
} jd_strict;

typedef struct jd_err {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    jd_strict strict;
    int warnings;               /* warnings seen (libjpeg's emit_message level -1) */
    int tolerated;              /* of which let pass by strict.tolerate */
    int code;                   /* enum jd_code of the last failure */
    char msg[JMSG_LENGTH_MAX];  /* libjpeg's message when code is JD_ERR_LIBJPEG */
} jd_err;

/* ------------------------------------------------------------------------------------------
 * Decompression
 * ------------------------------------------------------------------------------------------ */

typedef struct jd_dec {
    struct jpeg_decompress_struct d;
    jd_err e;
    struct jpeg_progress_mgr progress;
    int created;
    int64_t scan_limit;         /* scans the progress monitor lets libjpeg read */
    jvirt_barray_ptr *coefs;
    JSAMPLE *scratch;
} jd_dec;

/* What jd_dec_check_budget measured (pixels as declared; coefficients and blocks of all
   components, padded to whole MCUs; scans counted from the markers, progressive files only). */
typedef struct jd_budget {
    int64_t pixels, coefs, blocks, scans, scan_limit;
} jd_budget;

/* Everything the binding needs to word a failure, copied out of a jd_dec (so that a failure can
   outlive the decompressor, e.g. one item of a batch decoded on another thread). */
typedef struct jd_failure {
    int code;                   /* enum jd_code */
    char msg[JMSG_LENGTH_MAX];  /* libjpeg's message (JD_ERR_LIBJPEG) or ours (JD_ERR_BAD_REQUEST) */
    JDIMENSION width, height;   /* as declared (0 when the SOF was not reached) */
    int num_components;
    int scans_seen;             /* input_scan_number when it failed */
    int64_t scan_limit;
    jd_budget budget;
} jd_failure;

/* Markers jd_dec_open keeps for the caller (d.marker_list). */
#define JD_SAVE_EXIF 1  /* APP1 */
#define JD_SAVE_ALL 2   /* APP0..APP15 and COM */

/* Create the decompressor over buf[0:len] and read the header (markers up to the first SOS);
   save: 0, JD_SAVE_EXIF or JD_SAVE_ALL; strict: NULL counts warnings only. Always pair with
   jd_dec_close. */
int jd_dec_open(jd_dec *c, const unsigned char *buf, size_t len, const jd_strict *strict, int save);
void jd_dec_close(jd_dec *c);

/* Rows and columns of 8x8 blocks libjpeg stores for component ci (padded to whole MCUs). */
void jd_dec_blocks(const jd_dec *c, int ci, JDIMENSION *rows, JDIMENSION *cols);

/* After jd_dec_open: refuse (-1, code JD_ERR_TOO_MANY_*) an image over max_pixels pixels, over
   the coefficient guard, or (when data is not NULL and the file is progressive) with more scans
   than jd_scan_limit allows, counted from the markers of data[0:size] before any decoding. Sets
   the progress monitor's scan limit. Fills *out in every case. */
int jd_dec_check_budget(jd_dec *c, int64_t max_pixels, const unsigned char *data, size_t size,
                        jd_budget *out);

int jd_dec_read_coefficients(jd_dec *c);
/* Copy component ci's blocks into dst (bh * bw * 64 JCOEFs, row-major, natural order). */
int jd_dec_copy_component(jd_dec *c, int ci, JCOEF *dst, JDIMENSION bh, JDIMENSION bw);
/* The quantization table component ci was quantized with (NULL when none): the table latched
   by its first scan, else its slot's table. */
const JQUANT_TBL *jd_dec_quant_table(const jd_dec *c, int ci);

int jd_dec_start(jd_dec *c);
int jd_dec_crop(jd_dec *c, JDIMENSION *xoffset, JDIMENSION *width);
int jd_dec_skip(jd_dec *c, JDIMENSION n);
/* Read nrows output rows into dst (RGB, dst_stride bytes a row), dropping the first xskip
   output pixels of each scanline and keeping outw; cmyk: convert libjpeg's CMYK output to RGB. */
int jd_dec_read_rgb(jd_dec *c, JSAMPLE *dst, size_t dst_stride, JDIMENSION nrows, JDIMENSION xskip,
                    JDIMENSION outw, int cmyk);

/* After the rows wanted were read: entropy-decode the rest of the image and read the data to EOI
   (jpeg_finish_decompress), so that damage below the rows read (entropy-coded data that ends
   early or leaves bytes over) is warned about too. */
int jd_dec_finish(jd_dec *c);

/* The failure of the last jd_dec_* call on c (b: the budget it was checked against, or NULL). */
void jd_dec_failure(const jd_dec *c, const jd_budget *b, jd_failure *f);

/* ------------------------------------------------------------------------------------------
 * Partial entropy decoding: the quantized coefficients of a block rectangle of each component
 * ------------------------------------------------------------------------------------------ */

#define JD_MAX_COMPS 4

/* What to copy out of one component: block rows [r0, r1) and columns [c0, c1) of its padded
   grid (jd_dec_blocks), the top-left k x k coefficients of each block (k = 8: all 64), written
   to dst as rows of (c1 - c0) blocks of k*k JCOEFs (natural order within the k x k square:
   index v*k + u), dst_stride JCOEFs from one row's first block to the next's. r1 == r0: nothing
   is wanted from this component (dst may be NULL). */
typedef struct jd_rect {
    JDIMENSION r0, c0, r1, c1;
    int k;
    JCOEF *dst;
    size_t dst_stride;
} jd_rect;

/* How jd_read_rects got the coefficients. */
enum jd_rect_mode {
    JD_RECT_NONE = 0,   /* no component wanted anything: nothing decoded */
    JD_RECT_STOPPED,    /* one interleaved scan, decoded down to the last iMCU row needed */
    JD_RECT_WHOLE,      /* several scans (progressive, non-interleaved): decoded to the end */
    JD_RECT_SPLICED     /* restart segments covering the rectangle spliced into a small JPEG */
};

typedef struct jd_rect_info {
    int mode;                           /* enum jd_rect_mode */
    int num_components;
    JDIMENSION imcu_rows;               /* iMCU rows of the image */
    JDIMENSION imcu_rows_read;          /* of those, the rows entropy-decoded (STOPPED, WHOLE) */
    int64_t mcus_read;                  /* MCUs entropy-decoded */
    uint16_t quant[JD_MAX_COMPS][64];   /* each component's table, natural order (0: none) */
} jd_rect_info;

/* Open buf[0:size] on c, apply the budgets and copy the rectangles rects[0:nrects] (nrects <=
   JD_MAX_COMPS, rects[i] for component i) of quantized coefficients, entropy-decoding as little
   as the file allows: a single-scan file stops after the last iMCU row a rectangle needs; one
   whose restart interval divides its MCU rows is cut to the restart segments the rectangles
   cover (bytes spliced into a small JPEG, decoded whole); multi-scan files decode to the end.
   The coefficients equal those of jd_dec_read_coefficients at the same places. Warnings are
   counted only over what was decoded. Always pair with jd_dec_close(c). On failure, -1 with
   c->e.code (JD_ERR_BAD_REQUEST when a rectangle does not fit; nothing was decoded then). */
int jd_read_rects(jd_dec *c, const unsigned char *buf, size_t size, const jd_strict *strict, int64_t max_pixels,
                  const jd_rect *rects, int nrects, jd_budget *budget, jd_rect_info *info);

/* One item of a batch: the input and rectangles; rc, failure or warnings and info on return. */
typedef struct jd_rect_job {
    const unsigned char *data;
    size_t size;
    jd_rect rects[JD_MAX_COMPS];
    int nrects;
    int rc;                 /* 0, or -1 with failure filled */
    int warnings;
    jd_rect_info info;
    jd_failure failure;
} jd_rect_job;

/* jd_read_rects over jobs[0:n] on up to `threads` threads (the calling one included); each job
   succeeds or fails on its own. Returns the number of threads used. */
int jd_read_rects_batch(jd_rect_job *jobs, int n, const jd_strict *strict, int64_t max_pixels, int threads);

/* ------------------------------------------------------------------------------------------
 * Compression: the reference encoder (libjpeg's own jpeg_set_quality tables, islow DCT)
 * ------------------------------------------------------------------------------------------ */

typedef struct jd_enc {
    struct jpeg_compress_struct c;
    jd_err e;
    int created;
    unsigned char *out;         /* the JPEG written, ours to free (jd_enc_close) on every path */
    unsigned long outsize;
    size_t cap;
    struct jpeg_destination_mgr dest;
} jd_enc;

/* JPEG of h rows of w RGB pixels (stride bytes a row) into s->out[0:s->outsize]; h0 x v0 the
   luma sampling factors (chroma 1x1). Tables: libjpeg's at quality (jpeg_set_quality, baseline),
   or when luma is not NULL, luma and chroma (64 entries 1..65535 each, natural order; over 255
   gives SOF1). optimize: optimal Huffman tables. Always pair with jd_enc_close. */
int jd_encode(jd_enc *s, const JSAMPLE *rgb, JDIMENSION w, JDIMENSION h, size_t stride, int quality,
              int h0, int v0, const uint16_t *luma, const uint16_t *chroma, int optimize);
void jd_enc_close(jd_enc *s);

/* ------------------------------------------------------------------------------------------
 * Writing JPEGs from coefficients: lossless transcoding, coefficients we hold
 * ------------------------------------------------------------------------------------------ */

/* One JPEG read and one written (jd_transcode), or only written (jd_write_coefficients). */
typedef struct jd_xcode {
    jd_dec src;
    jd_enc dst;
} jd_xcode;

/* Baseline sequential Huffman JPEG (SOF0, or SOF1 when a table has entries over 255) holding the
   same quantized coefficients, quantization tables, sampling and colour space as buf[0:size]
   (any DCT-based 8-bit JPEG: progressive, arithmetic, multi-scan), into t->dst.out[0:outsize].
   optimize: optimal Huffman tables (a second pass); restart_interval: MCUs between restart
   markers (0: none); keep_markers: copy APPn (but JFIF APP0 and Adobe APP14, which libjpeg
   writes itself) and COM markers. Always pair with jd_xcode_close. */
int jd_transcode(jd_xcode *t, const unsigned char *buf, size_t size, const jd_strict *strict, int64_t max_pixels,
                 int optimize, unsigned restart_interval, int keep_markers, jd_budget *budget);

/* A component of coefficients we hold: bh x bw blocks of 64 JCOEFs (natural order), row-major;
   h x v its sampling factors, quant its table (natural order, entries 1..65535). */
typedef struct jd_coef_plane {
    const JCOEF *coefs;
    JDIMENSION bh, bw;
    int h, v;
    const uint16_t *quant;
} jd_coef_plane;

/* A JPEG of width x height pixels holding planes[0:nc] (nc 1..4) in colour space cs (JCS_GRAYSCALE,
   JCS_YCbCr, JCS_RGB, JCS_CMYK, JCS_YCCK), into t->dst.out. Each plane needs at least the
   component's blocks (ceil(width * h / (8 * max h)) wide, likewise high) and at most its blocks
   padded to whole MCUs; the padding blocks are libjpeg's (DC of the block to the left, AC 0).
   Identical tables share a slot (at most 4). JD_ERR_BAD_REQUEST when sizes do not fit. */
int jd_write_coefficients(jd_xcode *t, JDIMENSION width, JDIMENSION height, J_COLOR_SPACE cs,
                          const jd_coef_plane *planes, int nc, int optimize, unsigned restart_interval);
void jd_xcode_close(jd_xcode *t);

/* libjpeg-turbo's version as compiled against, e.g. "2.1.5 (libjpeg API 62)". */
const char *jd_version(void);

/* ------------------------------------------------------------------------------------------
 * Marker walker (the only one in jdct: the Python JPEG layer reads segments through it)
 * ------------------------------------------------------------------------------------------ */

typedef struct jd_segment {
    int marker;     /* the byte after 0xFF: 0xC0 (SOF0), 0xDB (DQT), 0xDA (SOS), 0xD9 (EOI)... */
    size_t offset;  /* of the payload (after the 2-byte length) */
    size_t length;  /* payload bytes present (the declared length - 2, cut at the end of data) */
} jd_segment;

typedef struct jd_walker {
    const unsigned char *data;
    size_t size, pos;
    int through_scans;  /* 0: stop after the first SOS; 1: skip entropy-coded data, go on to EOI */
    int done;
} jd_walker;

void jd_walker_init(jd_walker *w, const unsigned char *data, size_t size, int through_scans);
/* The next marker segment (1), or 0 at the end: EOI (returned first), the first SOS when not
   through_scans, the end of the data, or a structure too broken to follow. Bytes that are not a
   marker where one is due are skipped as libjpeg does; RSTn, TEM and stuffed bytes carry no
   segment and are skipped. */
int jd_walker_next(jd_walker *w, jd_segment *seg);
/* SOS segments from SOI to EOI (the scans libjpeg can read at most). */
int64_t jd_count_scans(const unsigned char *data, size_t size);

/* ------------------------------------------------------------------------------------------
 * Forward DCT and resize (pixel math bit-identical to libjpeg-turbo's encoder and Pillow)
 * ------------------------------------------------------------------------------------------ */

/* The coefficients libjpeg-turbo's 4:2:0 islow encoder stores for rgb (H x W x 3, row stride
   W * 3, H and W multiples of 16), quantized with ql (luma) and qc (chroma), natural order,
   entries 1..255. y: (H/8, W/8, 64); cb, cr: (H/16, W/16, 64). -1 when out of memory. */
int jd_forward_dct(const uint8_t *rgb, int H, int W, const uint16_t *ql, const uint16_t *qc,
                   int16_t *y, int16_t *cb, int16_t *cr);

/* Pillow 13's antialiased bilinear resize of the box (x0, y0, x1, y1) of src (sh x sw x 3, row
   stride sw * 3) to dst (dh x dw x 3). -1 when out of memory. */
int jd_resize_bilinear(const uint8_t *src, int sw, int sh, float x0, float y0, float x1, float y1,
                       uint8_t *dst, int dw, int dh);

/* ------------------------------------------------------------------------------------------
 * Internal: shared by the csrc/ files, not bound to Python
 * ------------------------------------------------------------------------------------------ */

/* libjpeg's error manager made ours: errors longjmp to e->jb, warnings are counted (or, strict,
   the first one not tolerated is an error), nothing is printed. strict may be NULL. */
void jd_err_init(jd_err *e, const jd_strict *strict);
/* Reset s so that jd_enc_close is safe whatever happens next. */
void jd_enc_reset(jd_enc *s);
/* Point s->c (created) at a memory destination whose buffer s->out stays ours: unlike
   jpeg_mem_dest's, it is never left dangling when an error stops the compressor midway. */
void jd_enc_dest(jd_enc *s);

/* ------------------------------------------------------------------------------------------
 * Compiler portability (internal)
 * ------------------------------------------------------------------------------------------ */

#if defined(__GNUC__)
#define JD_INLINE static inline __attribute__((always_inline))
#else
#define JD_INLINE static inline
#endif

/* The hot loops are written over 8 independent lanes so that the compiler vectorizes them; on
   x86-64 Linux with GCC an AVX2 clone is also built and picked at load time (ifunc). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define JD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define JD_CLONES
#endif

#endif /* JDCT_H */
