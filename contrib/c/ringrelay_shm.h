/* ringrelay_shm.h: single-header C reader for ringrelay shared-memory regions (layout 1).
 *
 * Format and protocol: ringrelay-shm(7). C11 with GCC/Clang __atomic builtins; no allocation,
 * no threads, no dependencies beyond POSIX. Little-endian hosts only (the region is little-endian;
 * rr_open refuses otherwise). Never writes to the region: it is opened O_RDONLY, mapped PROT_READ.
 *
 *   rr_reader r; int e = rr_open(&r, "/dev/shm/ringrelay/seismo");
 *   if (e) { fprintf(stderr, "%s\n", rr_strerror(e)); ... }
 *   rr_seek_oldest(&r);
 *   rr_chunk c; uint8_t buf[4096 * 64];
 *   while ((c = rr_read(&r, buf, sizeof buf / r.frame_bytes)).frames || c.lost) { ... }
 *   rr_close(&r);
 *
 * Truncation: a mapped page past the end of a file that was cut short under the reader (a
 * `truncate`, a copy over it) raises SIGBUS when touched. rr_read checks the file's size first
 * (rr_check: one fstat on the descriptor it mapped) and returns chunk.error = RR_E_TRUNCATED
 * without touching the mapping; call rr_check yourself before rr_head, rr_seek_*, rr_state or
 * rr_time_of when you poll. A cut that lands between the check and the loads after it still
 * raises SIGBUS: a program that must survive that installs its own SIGBUS handler.
 */
#ifndef RINGRELAY_SHM_H
#define RINGRELAY_SHM_H

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ringrelay_shm.h reads little-endian regions on little-endian hosts only"
#endif

/* ---- layout 1 offsets (identity block is immutable after publication) ---- */
#define RR_OFF_MAGIC 0x000
#define RR_OFF_MAJOR 0x008
#define RR_OFF_MINOR 0x00A
#define RR_OFF_ENDIAN 0x00C
#define RR_OFF_INCOMPAT 0x010
#define RR_OFF_FILE_BYTES 0x018
#define RR_OFF_GENERATION 0x020
#define RR_OFF_WRITER_PID 0x028
#define RR_OFF_DATA_OFFSET 0x038
#define RR_OFF_CAPACITY 0x040
#define RR_OFF_FRAME_BYTES 0x048
#define RR_OFF_MAX_BATCH 0x04C
#define RR_OFF_VALUE_TYPE 0x050
#define RR_OFF_VALUE_BYTES 0x052
#define RR_OFF_CHANNELS 0x054
#define RR_OFF_VPC 0x056
#define RR_OFF_MODE 0x058
#define RR_OFF_FACTOR 0x05C
#define RR_OFF_INPUT_RATE 0x060
#define RR_OFF_NAME 0x0C0
#define RR_OFF_CRC 0x0FC
#define RR_OFF_HEAD 0x100
#define RR_OFF_INTENT 0x108
#define RR_OFF_STATE 0x110
#define RR_OFF_STATUS_SEQ 0x140
#define RR_OFF_HEARTBEAT_COUNT 0x148
#define RR_OFF_ANCHOR_COUNT 0x180
#define RR_OFF_ANCHORS 0x200
#define RR_ANCHOR_SLOTS 16
#define RR_ANCHOR_BYTES 32

#define RR_STATE_INIT 0
#define RR_STATE_RUNNING 1
#define RR_STATE_STOPPED 4

enum rr_value_type { RR_U8 = 1, RR_I8, RR_U16, RR_I16, RR_U32, RR_I32, RR_F32, RR_F64 };

/* Errors are negative: -errno, or one of these. */
#define RR_E_NOTREGION (-1000)
#define RR_E_NEWER (-1001)
#define RR_E_ENDIAN (-1002)
#define RR_E_CHECKSUM (-1003)
#define RR_E_INCONSISTENT (-1004)
#define RR_E_SHORT (-1005)
#define RR_E_TRUNCATED (-1006)

typedef struct {
    int fd;
    const uint8_t *base;
    size_t len;
    dev_t dev;
    ino_t ino;
    uint64_t generation, data_offset, capacity, pos, lost_total;
    uint32_t frame_bytes, max_batch, channels, values_per_channel, factor;
    uint16_t value_type, value_bytes, mode;
    double input_rate;
    char name[61];
} rr_reader;

typedef struct {
    uint64_t start;  /* absolute index of the first delivered frame */
    uint64_t frames; /* frames delivered into dst */
    uint64_t lost;   /* frames lost immediately before start */
    int error;       /* 0, or RR_E_TRUNCATED (nothing delivered; the region is unreadable) */
} rr_chunk;

static inline const char *rr_strerror(int e) {
    switch (e) {
    case RR_E_NOTREGION: return "not a ringrelay region (bad magic)";
    case RR_E_NEWER: return "region has a newer layout version: upgrade the reader";
    case RR_E_ENDIAN: return "region was written with the other byte order";
    case RR_E_CHECKSUM: return "region header checksum mismatch";
    case RR_E_INCONSISTENT: return "region header inconsistent";
    case RR_E_SHORT: return "file too short for a ringrelay region";
    case RR_E_TRUNCATED:
        return "region was truncated (the file is shorter than its mapping): the relay restarted "
               "or the file was replaced";
    default: return e < 0 ? strerror(-e) : "ok";
    }
}

/* ---- the three primitives that decide all ordering ---- */
static inline uint32_t rr_load32(const rr_reader *r, size_t off) {
    return __atomic_load_n((const uint32_t *)(r->base + off), __ATOMIC_RELAXED);
}
static inline void rr_fence_acq(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
/* A monotonic u64 counter. 64-bit hosts: one relaxed 8-byte load. 32-bit hosts: never an
 * 8-byte atomic (LDREXD on a read-only page); read hi, lo, hi and retry until the highs agree. */
static inline uint64_t rr_load64(const rr_reader *r, size_t off) {
#if UINTPTR_MAX > 0xFFFFFFFFu
    return __atomic_load_n((const uint64_t *)(r->base + off), __ATOMIC_RELAXED);
#else
    for (;;) {
        uint32_t hi = rr_load32(r, off + 4);
        rr_fence_acq();
        uint32_t lo = rr_load32(r, off);
        rr_fence_acq();
        if (rr_load32(r, off + 4) == hi) return ((uint64_t)hi << 32) | lo;
    }
#endif
}
/* A u64 inside a seqlock: two 4-byte loads, consistency comes from the sequence word. */
static inline uint64_t rr_load64_halves(const rr_reader *r, size_t off) {
    return ((uint64_t)rr_load32(r, off + 4) << 32) | rr_load32(r, off);
}

static inline uint16_t rr_get16(const uint8_t *b, size_t o) { uint16_t v; memcpy(&v, b + o, 2); return v; }
static inline uint32_t rr_get32(const uint8_t *b, size_t o) { uint32_t v; memcpy(&v, b + o, 4); return v; }
static inline uint64_t rr_get64(const uint8_t *b, size_t o) { uint64_t v; memcpy(&v, b + o, 8); return v; }

static inline uint32_t rr_crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

static inline int rr_width(uint16_t t) {
    switch (t) {
    case RR_U8: case RR_I8: return 1;
    case RR_U16: case RR_I16: return 2;
    case RR_U32: case RR_I32: case RR_F32: return 4;
    case RR_F64: return 8;
    default: return 0;
    }
}

/* Validates a header copy `h` (256 bytes) against the file size. */
static inline int rr_validate(const uint8_t *h, uint64_t file_len) {
    if (file_len < 0x400) return RR_E_SHORT;
    if (memcmp(h, "RRLYSHM\0", 8) != 0) return RR_E_NOTREGION;
    if (rr_get32(h, RR_OFF_ENDIAN) == 0x04030201u) return RR_E_ENDIAN;
    if (rr_get32(h, RR_OFF_ENDIAN) != 0x01020304u) return RR_E_INCONSISTENT;
    if (rr_get16(h, RR_OFF_MAJOR) > 1) return RR_E_NEWER;
    if (rr_get16(h, RR_OFF_MAJOR) != 1 || rr_get32(h, RR_OFF_INCOMPAT) != 0) return RR_E_INCONSISTENT;
    if (rr_crc32(h, RR_OFF_CRC) != rr_get32(h, RR_OFF_CRC)) return RR_E_CHECKSUM;
    uint64_t fb = rr_get64(h, RR_OFF_FILE_BYTES), off = rr_get64(h, RR_OFF_DATA_OFFSET);
    uint64_t cap = rr_get64(h, RR_OFF_CAPACITY);
    uint32_t frame = rr_get32(h, RR_OFF_FRAME_BYTES), mb = rr_get32(h, RR_OFF_MAX_BATCH);
    int w = rr_width(rr_get16(h, RR_OFF_VALUE_TYPE));
    uint32_t ch = rr_get16(h, RR_OFF_CHANNELS), vpc = rr_get16(h, RR_OFF_VPC);
    if (fb > file_len || w == 0 || ch == 0 || vpc < 1 || vpc > 2) return RR_E_INCONSISTENT;
    if (frame != (uint32_t)w * ch * vpc || cap < 8 || mb == 0 || mb > cap / 8) return RR_E_INCONSISTENT;
    if (off < 0x400 || off % 8 || cap > (UINT64_MAX - off) / frame || off + cap * frame > fb)
        return RR_E_INCONSISTENT;
    return 0;
}

static inline int rr_open(rr_reader *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) return -errno;
    struct stat st;
    if (fstat(r->fd, &st) != 0) { int e = -errno; close(r->fd); return e; }
    if (!S_ISREG(st.st_mode)) { close(r->fd); return RR_E_NOTREGION; }
    if (st.st_size < 0x400) { close(r->fd); return RR_E_SHORT; }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, r->fd, 0);
    if (m == MAP_FAILED) { int e = -errno; close(r->fd); return e; }
    r->base = (const uint8_t *)m;
    r->len = (size_t)st.st_size;
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    uint8_t h[256];
    memcpy(h, r->base, sizeof h);
    int e = rr_validate(h, (uint64_t)st.st_size);
    if (e) { munmap(m, r->len); close(r->fd); return e; }
    r->generation = rr_get64(h, RR_OFF_GENERATION);
    r->data_offset = rr_get64(h, RR_OFF_DATA_OFFSET);
    r->capacity = rr_get64(h, RR_OFF_CAPACITY);
    r->frame_bytes = rr_get32(h, RR_OFF_FRAME_BYTES);
    r->max_batch = rr_get32(h, RR_OFF_MAX_BATCH);
    r->value_type = rr_get16(h, RR_OFF_VALUE_TYPE);
    r->value_bytes = rr_get16(h, RR_OFF_VALUE_BYTES);
    r->channels = rr_get16(h, RR_OFF_CHANNELS);
    r->values_per_channel = rr_get16(h, RR_OFF_VPC);
    r->mode = rr_get16(h, RR_OFF_MODE);
    r->factor = rr_get32(h, RR_OFF_FACTOR);
    memcpy(&r->input_rate, h + RR_OFF_INPUT_RATE, 8);
    memcpy(r->name, h + RR_OFF_NAME, 60);
    return 0;
}

static inline void rr_close(rr_reader *r) {
    if (r->base) munmap((void *)r->base, r->len);
    if (r->fd >= 0) close(r->fd);
    r->base = NULL;
    r->fd = -1;
}

/* 0 while the file still backs the whole mapping, else RR_E_TRUNCATED (see the top). */
static inline int rr_check(const rr_reader *r) {
    struct stat st;
    if (fstat(r->fd, &st) != 0 || (uint64_t)st.st_size < (uint64_t)r->len) return RR_E_TRUNCATED;
    return 0;
}

static inline uint64_t rr_head(const rr_reader *r) { return rr_load64(r, RR_OFF_HEAD); }
static inline uint64_t rr_intent(const rr_reader *r) { return rr_load64(r, RR_OFF_INTENT); }
static inline uint32_t rr_state(const rr_reader *r) { return rr_load32(r, RR_OFF_STATE); }

/* 1 when the file at `path` is no longer the one mapped (daemon restart): rr_close + rr_open. */
static inline int rr_replaced(const rr_reader *r, const char *path) {
    struct stat a, b;
    if (fstat(r->fd, &a) != 0 || a.st_nlink == 0) return 1;
    if (stat(path, &b) != 0) return 1;
    return a.st_dev != b.st_dev || a.st_ino != b.st_ino;
}

static inline void rr_seek_oldest(rr_reader *r) {
    uint64_t h = rr_head(r);
    rr_fence_acq();
    uint64_t i = rr_intent(r);
    uint64_t o = i > r->capacity ? i - r->capacity : 0;
    r->pos = o < h ? o : h;
}

static inline void rr_seek_last(rr_reader *r, uint64_t n) {
    rr_seek_oldest(r);
    uint64_t h = rr_head(r);
    if (h > n && h - n > r->pos) r->pos = h - n;
}

/* Copies up to max_frames frames into dst. Frames that were overwritten before or during the
 * copy are never delivered: they are counted in chunk.lost (just before chunk.start). A file
 * cut short under the reader delivers nothing and sets chunk.error. */
static inline rr_chunk rr_read(rr_reader *r, void *dst, uint64_t max_frames) {
    rr_chunk c = {r->pos, 0, 0, 0};
    if ((c.error = rr_check(r)) != 0) return c;
    uint64_t cap = r->capacity, fb = r->frame_bytes;
    uint64_t h = rr_head(r);
    rr_fence_acq(); /* pairs with the writer's release store of head */
    uint64_t i0 = rr_intent(r);
    if (h < r->pos) return c; /* replaced file: reattach */
    uint64_t oldest = i0 > cap ? i0 - cap : 0, start0 = r->pos;
    if (r->pos < oldest) {
        uint64_t np = oldest + r->max_batch;
        r->pos = np < h ? np : h;
    }
    uint64_t n = h - r->pos;
    if (n > max_frames) n = max_frames;
    if (n > cap) n = cap;
    uint64_t slot = r->pos % cap, first = cap - slot < n ? cap - slot : n;
    const uint8_t *data = r->base + r->data_offset;
    memcpy(dst, data + slot * fb, first * fb);
    if (first < n) memcpy((uint8_t *)dst + first * fb, data, (n - first) * fb);
    rr_fence_acq(); /* pairs with the writer's release fence after storing intent */
    uint64_t i1 = rr_intent(r);
    uint64_t safe = i1 > cap ? i1 - cap : 0;
    uint64_t bad = safe > r->pos ? safe - r->pos : 0;
    if (bad > n) bad = n;
    if (bad) memmove(dst, (uint8_t *)dst + bad * fb, (n - bad) * fb);
    c.lost = (r->pos - start0) + bad;
    c.start = r->pos + bad;
    c.frames = n - bad;
    r->pos += n;
    r->lost_total += c.lost;
    return c;
}

/* Value k of a frame, as double (exact for every value type). */
static inline double rr_value(const rr_reader *r, const uint8_t *frame, unsigned k) {
    const uint8_t *p = frame + (size_t)k * r->value_bytes;
    switch (r->value_type) {
    case RR_U8: return *p;
    case RR_I8: return (int8_t)*p;
    case RR_U16: return rr_get16(p, 0);
    case RR_I16: return (int16_t)rr_get16(p, 0);
    case RR_U32: return rr_get32(p, 0);
    case RR_I32: return (int32_t)rr_get32(p, 0);
    case RR_F32: { float f; memcpy(&f, p, 4); return f; }
    case RR_F64: { double d; memcpy(&d, p, 8); return d; }
    }
    return NAN;
}

/* CLOCK_REALTIME ns of frame j from the anchors (newest anchor at or before j, else the oldest).
 * Returns 0 on success, -1 if no anchor can be read. */
static inline int rr_time_of(const rr_reader *r, uint64_t j, int64_t *real_ns) {
    uint32_t count = rr_load32(r, RR_OFF_ANCHOR_COUNT);
    rr_fence_acq();
    unsigned n = count < RR_ANCHOR_SLOTS ? count : RR_ANCHOR_SLOTS;
    int have = 0, best_before = 0;
    uint64_t bf = 0; int64_t bt = 0; double br = 0;
    for (unsigned k = 0; k < n; k++) {
        size_t base = RR_OFF_ANCHORS + ((count - 1 - k) % RR_ANCHOR_SLOTS) * RR_ANCHOR_BYTES;
        for (int tries = 0; tries < 100; tries++) {
            uint32_t s1 = rr_load32(r, base);
            rr_fence_acq();
            if (s1 & 1) continue;
            uint64_t f = rr_load64_halves(r, base + 8);
            int64_t t = (int64_t)rr_load64_halves(r, base + 16);
            uint64_t rb = rr_load64_halves(r, base + 24);
            rr_fence_acq();
            if (rr_load32(r, base) != s1) continue;
            double rate; memcpy(&rate, &rb, 8);
            int before = f <= j;
            if (!have || (before && (!best_before || f > bf)) || (!before && !best_before && f < bf)) {
                bf = f; bt = t; br = rate; best_before = before; have = 1;
            }
            break;
        }
    }
    if (!have) return -1;
    if (br > 0) *real_ns = bt + (int64_t)llround(((double)j - (double)bf) * 1e9 / br);
    else if (j == bf) *real_ns = bt;
    else return -1;
    return 0;
}

#endif /* RINGRELAY_SHM_H */
