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
    JD_ERR_TOO_MANY_SCANS
};

typedef struct jd_err {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int strict;                 /* the first warning becomes an error */
    int warnings;               /* warnings seen (libjpeg's emit_message level -1) */
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

/* Create the decompressor over buf[0:len] and read the header (markers up to the first SOS);
   save_exif keeps APP1 markers for the caller (d.marker_list). Always pair with jd_dec_close. */
int jd_dec_open(jd_dec *c, const unsigned char *buf, size_t len, int strict, int save_exif);
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

/* ------------------------------------------------------------------------------------------
 * Compression: the reference encoder (libjpeg's own jpeg_set_quality tables, islow DCT)
 * ------------------------------------------------------------------------------------------ */

typedef struct jd_enc {
    struct jpeg_compress_struct c;
    jd_err e;
    int created;
    unsigned char *out;
    unsigned long outsize;
} jd_enc;

/* Baseline JPEG of h rows of w RGB pixels (stride bytes a row) into s->out[0:s->outsize];
   h0 x v0 the luma sampling factors (chroma 1x1). Always pair with jd_enc_close. */
int jd_encode(jd_enc *s, const JSAMPLE *rgb, JDIMENSION w, JDIMENSION h, size_t stride, int quality,
              int h0, int v0);
void jd_enc_close(jd_enc *s);

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
