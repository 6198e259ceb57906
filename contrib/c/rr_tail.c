/* rr_tail: print the frames a ringrelay region holds now, as CSV like `ringrelay tail
 * --format csv`. Build: cc -O2 -o rr_tail rr_tail.c -lm
 * Usage: rr_tail PATH [LAST_N] */
#include "ringrelay_shm.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s REGION [LAST_N]\n", argv[0]); return 2; }
    rr_reader r;
    int e = rr_open(&r, argv[1]);
    if (e) { fprintf(stderr, "rr_tail: %s: %s\n", argv[1], rr_strerror(e)); return 1; }
    if ((e = rr_check(&r)) != 0) { fprintf(stderr, "rr_tail: %s: %s\n", argv[1], rr_strerror(e)); return 1; }
    if (argc > 2) rr_seek_last(&r, strtoull(argv[2], NULL, 10)); else rr_seek_oldest(&r);
    uint64_t end = rr_head(&r);
    printf("frame,time_ns");
    for (unsigned c = 0; c < r.channels; c++) {
        if (r.values_per_channel == 2) printf(",c%u_min,c%u_max", c, c);
        else printf(",c%u", c);
    }
    printf("\n");
    uint8_t *buf = malloc((size_t)r.frame_bytes * 1024);
    unsigned nv = r.channels * r.values_per_channel;
    while (r.pos < end) {
        uint64_t want = end - r.pos < 1024 ? end - r.pos : 1024;
        rr_chunk c = rr_read(&r, buf, want);
        if (c.error) {
            fprintf(stderr, "rr_tail: %s: %s\n", argv[1], rr_strerror(c.error));
            free(buf);
            rr_close(&r);
            return 1;
        }
        if (c.lost) fprintf(stderr, "rr_tail: lost %llu frames before %llu\n",
                            (unsigned long long)c.lost, (unsigned long long)c.start);
        for (uint64_t i = 0; i < c.frames; i++) {
            int64_t t;
            printf("%llu,", (unsigned long long)(c.start + i));
            if (rr_time_of(&r, c.start + i, &t) == 0) printf("%lld", (long long)t);
            for (unsigned k = 0; k < nv; k++) {
                double v = rr_value(&r, buf + i * r.frame_bytes, k);
                if (r.value_type == RR_F32) printf(",%.9g", v);
                else if (r.value_type == RR_F64) printf(",%.17g", v);
                else printf(",%.0f", v);
            }
            printf("\n");
        }
        if (!c.frames && !c.lost) break;
    }
    free(buf);
    rr_close(&r);
    return 0;
}
