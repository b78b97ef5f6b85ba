/* The marker walker: JPEG marker segments found from their lengths, as libjpeg reads them. */
#include <string.h>

#include "jdct.h"

#define JD_M_SOS 0xDA
#define JD_M_EOI 0xD9

void jd_walker_init(jd_walker *w, const unsigned char *data, size_t size, int through_scans) {
    w->data = data;
    w->size = size;
    w->pos = 2;
    w->through_scans = through_scans;
    /* a JPEG starts with SOI (FF D8) and holds at least one more marker */
    w->done = data == NULL || size < 4 || data[0] != 0xFF || data[1] != 0xD8;
}

/* Position of the first byte after the entropy-coded data starting at pos: the 0xFF of the next
   marker that is not a stuffed zero (FF 00) or a restart marker (FF D0..D7), or size. */
static size_t jd_skip_entropy(const unsigned char *data, size_t size, size_t pos) {
    while (pos < size) {
        const unsigned char *hit = (const unsigned char *)memchr(data + pos, 0xFF, size - pos);
        size_t ff;
        if (hit == NULL) return size;
        ff = (size_t)(hit - data);
        pos = ff + 1;
        while (pos < size && data[pos] == 0xFF) pos++; /* fill bytes */
        if (pos >= size) return size;
        if (data[pos] != 0x00 && !(data[pos] >= 0xD0 && data[pos] <= 0xD7)) return pos - 1;
        pos++;
    }
    return size;
}

int jd_walker_next(jd_walker *w, jd_segment *seg) {
    const unsigned char *data = w->data;
    size_t n = w->size, pos = w->pos, length;
    int marker;
    while (!w->done) {
        if (pos >= n) break;
        if (data[pos] != 0xFF) {
            /* not a marker where one is due: skip to the next 0xFF, as libjpeg does (it warns
               "extraneous bytes before marker") */
            const unsigned char *hit = (const unsigned char *)memchr(data + pos, 0xFF, n - pos);
            if (hit == NULL) break;
            pos = (size_t)(hit - data);
        }
        while (pos < n && data[pos] == 0xFF) pos++; /* fill bytes */
        if (pos >= n) break;
        marker = data[pos++];
        if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7))
            continue; /* stuffed byte, TEM or RSTn: no segment */
        if (marker == JD_M_EOI) {
            seg->marker = marker;
            seg->offset = pos;
            seg->length = 0;
            w->done = 1;
            w->pos = pos;
            return 1;
        }
        if (n - pos < 2) break;
        length = ((size_t)data[pos] << 8) | data[pos + 1];
        if (length < 2) break;
        seg->marker = marker;
        seg->offset = pos + 2;
        seg->length = length - 2 < n - pos - 2 ? length - 2 : n - pos - 2;
        if (marker == JD_M_SOS) {
            if (!w->through_scans) {
                w->done = 1;
            } else if (length <= n - pos) {
                pos = jd_skip_entropy(data, n, pos + length);
            } else {
                pos = n;
            }
        } else {
            pos = length <= n - pos ? pos + length : n;
        }
        w->pos = pos;
        return 1;
    }
    w->done = 1;
    w->pos = pos;
    return 0;
}

int64_t jd_count_scans(const unsigned char *data, size_t size) {
    jd_walker w;
    jd_segment seg;
    int64_t scans = 0;
    jd_walker_init(&w, data, size, 1);
    while (jd_walker_next(&w, &seg))
        if (seg.marker == JD_M_SOS) scans++;
    return scans;
}
