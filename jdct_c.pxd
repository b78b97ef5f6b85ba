# Declarations of the C API of csrc/ (csrc/jdct.h), for the binding _decoder.pyx. Only what the
# binding touches is declared: the real definitions come from the header at C compile time.
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t

from jpeglib cimport J_COLOR_SPACE, JCOEF, JDIMENSION, JQUANT_TBL, JSAMPLE, jpeg_decompress_struct


cdef extern from "jdct.h" nogil:
    # limits
    const long long JD_DEFAULT_MAX_PIXELS
    const long long JD_COEF_SLACK
    const long long JD_SCAN_BLOCK_BUDGET
    const int JD_MIN_SCAN_LIMIT
    const int JD_MAX_SCANS
    int64_t jd_scan_limit(int64_t blocks)

    # errors
    enum jd_code:
        JD_OK
        JD_ERR_LIBJPEG
        JD_ERR_NO_MEMORY
        JD_ERR_NO_SCANLINES
        JD_ERR_TOO_MANY_PIXELS
        JD_ERR_TOO_MANY_COEFS
        JD_ERR_TOO_MANY_SCANS
        JD_ERR_BAD_REQUEST

    const int JD_MAX_TOLERATED

    ctypedef struct jd_tolerance:
        const char *substring
        int anywhere
        long at_most

    ctypedef struct jd_strict:
        int on
        int ntolerate
        jd_tolerance tolerate[8]

    ctypedef struct jd_err:
        jd_strict strict
        int warnings
        int tolerated
        int code
        char msg[200]

    # decompression
    ctypedef struct jd_dec:
        jpeg_decompress_struct d
        jd_err e
        int64_t scan_limit

    ctypedef struct jd_budget:
        int64_t pixels, coefs, blocks, scans, scan_limit

    ctypedef struct jd_failure:
        int code
        char msg[200]
        JDIMENSION width, height
        int num_components
        int scans_seen
        int64_t scan_limit
        jd_budget budget

    const int JD_SAVE_EXIF
    const int JD_SAVE_ALL

    int jd_dec_open(jd_dec *c, const unsigned char *buf, size_t len, const jd_strict *strict, int save)
    void jd_dec_close(jd_dec *c)
    void jd_dec_blocks(const jd_dec *c, int ci, JDIMENSION *rows, JDIMENSION *cols)
    int jd_dec_check_budget(jd_dec *c, int64_t max_pixels, const unsigned char *data, size_t size,
                            jd_budget *out)
    int jd_dec_read_coefficients(jd_dec *c)
    int jd_dec_copy_component(jd_dec *c, int ci, JCOEF *dst, JDIMENSION bh, JDIMENSION bw)
    const JQUANT_TBL *jd_dec_quant_table(const jd_dec *c, int ci)
    int jd_dec_start(jd_dec *c)
    int jd_dec_crop(jd_dec *c, JDIMENSION *xoffset, JDIMENSION *width)
    int jd_dec_skip(jd_dec *c, JDIMENSION n)
    int jd_dec_read_rgb(jd_dec *c, JSAMPLE *dst, size_t dst_stride, JDIMENSION nrows,
                        JDIMENSION xskip, JDIMENSION outw, int cmyk)
    int jd_dec_finish(jd_dec *c)
    void jd_dec_failure(const jd_dec *c, const jd_budget *b, jd_failure *f)

    # partial entropy decoding
    const int JD_MAX_COMPS

    ctypedef struct jd_rect:
        JDIMENSION r0, c0, r1, c1
        int k
        JCOEF *dst
        size_t dst_stride

    enum jd_rect_mode:
        JD_RECT_NONE
        JD_RECT_STOPPED
        JD_RECT_WHOLE
        JD_RECT_SPLICED

    ctypedef struct jd_rect_info:
        int mode
        int num_components
        JDIMENSION imcu_rows
        JDIMENSION imcu_rows_read
        int64_t mcus_read
        uint16_t quant[4][64]

    int jd_read_rects(jd_dec *c, const unsigned char *buf, size_t size, const jd_strict *strict, int64_t max_pixels,
                      const jd_rect *rects, int nrects, jd_budget *budget, jd_rect_info *info)

    ctypedef struct jd_rect_job:
        const unsigned char *data
        size_t size
        jd_rect rects[4]
        int nrects
        int rc
        int warnings
        jd_rect_info info
        jd_failure failure

    int jd_read_rects_batch(jd_rect_job *jobs, int n, const jd_strict *strict, int64_t max_pixels, int threads)

    # compression
    ctypedef struct jd_enc:
        jd_err e
        unsigned char *out
        unsigned long outsize

    int jd_encode(jd_enc *s, const JSAMPLE *rgb, JDIMENSION w, JDIMENSION h, size_t stride,
                  int quality, int h0, int v0, const uint16_t *luma, const uint16_t *chroma, int optimize)
    void jd_enc_close(jd_enc *s)

    # writing coefficients
    ctypedef struct jd_xcode:
        jd_dec src
        jd_enc dst

    int jd_transcode(jd_xcode *t, const unsigned char *buf, size_t size, const jd_strict *strict, int64_t max_pixels,
                     int optimize, unsigned restart_interval, int keep_markers, jd_budget *budget)

    ctypedef struct jd_coef_plane:
        const JCOEF *coefs
        JDIMENSION bh, bw
        int h, v
        const uint16_t *quant

    int jd_write_coefficients(jd_xcode *t, JDIMENSION width, JDIMENSION height, J_COLOR_SPACE cs,
                              const jd_coef_plane *planes, int nc, int optimize, unsigned restart_interval)
    void jd_xcode_close(jd_xcode *t)
    const char *jd_version()

    # marker walker
    ctypedef struct jd_segment:
        int marker
        size_t offset
        size_t length

    ctypedef struct jd_walker:
        pass

    void jd_walker_init(jd_walker *w, const unsigned char *data, size_t size, int through_scans)
    int jd_walker_next(jd_walker *w, jd_segment *seg)
    int64_t jd_count_scans(const unsigned char *data, size_t size)

    # pixel math
    int jd_forward_dct(const uint8_t *rgb, int H, int W, const uint16_t *ql, const uint16_t *qc,
                       int16_t *y, int16_t *cb, int16_t *cr)
    int jd_resize_bilinear(const uint8_t *src, int sw, int sh, float x0, float y0, float x1,
                           float y1, uint8_t *dst, int dw, int dh)
