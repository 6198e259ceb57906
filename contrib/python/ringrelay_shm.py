"""Pure-stdlib reader for ringrelay shared-memory regions (layout 1); see ringrelay-shm(7).

    from ringrelay_shm import Region
    with Region("/dev/shm/ringrelay/seismo") as r:
        r.seek_last(10)
        start, frames, lost = r.read(1000)      # frames: list of tuples (or numpy array)
        print(start, lost, frames[:3], r.time_of(start))

numpy is optional: ``read(..., numpy=True)`` returns an ``(n, values)`` array (one copy out of
the ring, then the lap check), and ``read_views`` returns zero-copy read-only views (up to two
across the wrap point) that are trustworthy only once ``validate`` succeeds *after* use.

Ordering: control words are read as 4-byte loads (``struct`` on an aligned ``memoryview``);
64-bit counters as high, low, high words, retried until the highs agree. Acquire fences come from
libatomic's ``atomic_thread_fence`` through ctypes when available. x86/x86-64 need none (TSO);
on ARM without libatomic the reader refuses unless ``unsafe_no_fence=True``. Never writes: the
file is opened O_RDONLY and mapped ACCESS_READ.

Truncation: touching the mapping past the end of a file that was cut short under it (a
``truncate``, a copy over it) kills the interpreter with SIGBUS. So ``head``, ``intent``,
``state`` and ``anchors`` (and through them ``read``, ``read_views``, ``validate`` and the
seeks) first compare the file's size (one fstat) with the mapping and raise RegionError
("region ... was truncated ...") if it shrank. A cut that lands between that check and the
loads that follow it, or while a ``read_views`` view is in use, still raises SIGBUS: check
``state()`` again before trusting views kept across calls.
"""

import ctypes
import ctypes.util
import math
import mmap
import os
import platform
import struct
import sys
import zlib

MAGIC = b"RRLYSHM\0"
_TYPES = {1: ("B", 1), 2: ("b", 1), 3: ("H", 2), 4: ("h", 2), 5: ("I", 4), 6: ("i", 4),
          7: ("f", 4), 8: ("d", 8)}
_NP = {1: "<u1", 2: "<i1", 3: "<u2", 4: "<i2", 5: "<u4", 6: "<i4", 7: "<f4", 8: "<f8"}
STATE_RUNNING, STATE_STOPPED = 1, 4
ANCHOR_SLOTS, ANCHOR_BYTES, OFF_ANCHORS = 16, 32, 0x200


class RegionError(Exception):
    pass


def _make_fence(unsafe_no_fence):
    m = platform.machine().lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return lambda: None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("atomic") or "libatomic.so.1")
        f = lib.atomic_thread_fence
        f.argtypes = [ctypes.c_int]
        return lambda: f(2)  # memory_order_acquire
    except (OSError, AttributeError):
        if unsafe_no_fence:
            return lambda: None
        raise RegionError("no acquire fence available on %s (install libatomic1, or pass "
                          "unsafe_no_fence=True)" % m)


class Region:
    def __init__(self, path, unsafe_no_fence=False):
        self.path = path
        self._fence = _make_fence(unsafe_no_fence)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if st.st_size < 0x400:
                raise RegionError("%s: file too short for a ringrelay region" % path)
            self._mm = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self._ino = (st.st_dev, st.st_ino)
        self._mv = memoryview(self._mm)
        self._views = []
        h = bytes(self._mm[:256])
        if h[:8] != MAGIC:
            raise RegionError("%s: not a ringrelay region (bad magic)" % path)
        major, minor, endian = struct.unpack_from("<HHI", h, 8)
        if endian != 0x01020304:
            raise RegionError("%s: region was written with the other byte order" % path)
        if major > 1:
            raise RegionError("%s: region has a newer layout version %d.%d: upgrade the reader"
                              % (path, major, minor))
        if major != 1 or struct.unpack_from("<I", h, 0x10)[0] != 0:
            raise RegionError("%s: unknown layout or incompatible features" % path)
        if zlib.crc32(h[:0xFC]) & 0xFFFFFFFF != struct.unpack_from("<I", h, 0xFC)[0]:
            raise RegionError("%s: region header checksum mismatch" % path)
        (self.file_bytes, self.generation, self.writer_pid, _hb, _created, self.data_offset,
         self.capacity, self.frame_bytes, self.max_batch, self.value_type, self.value_bytes,
         self.channels, self.values_per_channel, self.mode, _insample, self.factor,
         self.input_rate, self.time_offset) = struct.unpack_from("<QQIIqQQIIHHHHHHIdd", h, 0x18)
        self.name = h[0xC0:0xFC].split(b"\0")[0].decode("utf-8", "replace")
        if self.value_type not in _TYPES or _TYPES[self.value_type][1] != self.value_bytes:
            raise RegionError("%s: region header inconsistent: value type" % path)
        nval = self.channels * self.values_per_channel
        if (self.file_bytes > st.st_size or self.channels == 0
                or self.values_per_channel not in (1, 2)
                or self.frame_bytes != self.value_bytes * nval or self.capacity < 8
                or not 0 < self.max_batch <= self.capacity // 8 or self.data_offset < 0x400
                or self.data_offset + self.capacity * self.frame_bytes > self.file_bytes):
            raise RegionError("%s: region header inconsistent: sizes" % path)
        self._fmt = "<" + _TYPES[self.value_type][0] * nval
        self.pos = 0
        self.lost_total = 0
        self.seek_oldest()

    # -- lifetime ------------------------------------------------------------------------------
    def close(self):
        self._views = []
        self._mv.release()
        self._mm.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def columns(self):
        if self.values_per_channel == 2:
            return ["c%d_%s" % (c, k) for c in range(self.channels) for k in ("min", "max")]
        return ["c%d" % c for c in range(self.channels)]

    # -- control words -------------------------------------------------------------------------
    def _check(self):
        """Raises RegionError when the file is now shorter than the mapping."""
        size = self._mm.size()  # fstat on the descriptor mmap keeps, not the path
        if size < len(self._mm):
            raise RegionError("region %s was truncated (%d bytes, needs %d): the relay restarted "
                              "or the file was replaced" % (self.path, size, len(self._mm)))

    def _u32(self, off):
        return struct.unpack_from("<I", self._mv, off)[0]

    def _counter(self, off):
        while True:
            hi = self._u32(off + 4)
            self._fence()
            lo = self._u32(off)
            self._fence()
            if self._u32(off + 4) == hi:
                return hi << 32 | lo

    def head(self):
        self._check()
        return self._counter(0x100)

    def intent(self):
        self._check()
        return self._counter(0x108)

    def state(self):
        self._check()
        return self._u32(0x110)

    def replaced(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._ino

    # -- positions -----------------------------------------------------------------------------
    def seek_oldest(self):
        h = self.head()
        self._fence()
        i = self.intent()
        self.pos = min(max(i - self.capacity, 0), h)

    def seek_last(self, n):
        self.seek_oldest()
        self.pos = max(self.pos, self.head() - n)

    # -- the protocol ----------------------------------------------------------------------------
    def _begin(self, max_frames):
        h = self.head()
        self._fence()  # pairs with the writer's release store of head
        i0 = self.intent()
        start0 = self.pos
        if h < self.pos:
            return start0, 0, 0
        if self.pos < i0 - self.capacity:
            self.pos = min(i0 - self.capacity + self.max_batch, h)
        n = min(h - self.pos, max_frames, self.capacity)
        return start0, n, self.pos - start0

    def validate(self, start, n):
        """After using frames [start, start+n): how many of the first ones were overwritten."""
        self._fence()  # pairs with the writer's release fence after storing intent
        safe = self.intent() - self.capacity
        return max(0, min(n, safe - start))

    def _pieces(self, pos, n):
        slot = pos % self.capacity
        first = min(self.capacity - slot, n)
        base, fb = self.data_offset, self.frame_bytes
        out = [(base + slot * fb, first)]
        if first < n:
            out.append((base, n - first))
        return out

    def read(self, max_frames=4096, numpy=False):
        """Returns (start, frames, lost): frames as a list of tuples, or an (n, values) numpy
        array with numpy=True; `lost` frames were overwritten just before `start`."""
        _, n, lost = self._begin(max_frames)  # checks the size (through head)
        pos, fb = self.pos, self.frame_bytes
        raw = b"".join(bytes(self._mv[o:o + k * fb]) for o, k in self._pieces(pos, n)) if n else b""
        bad = self.validate(pos, n)
        self.pos += n
        lost += bad
        self.lost_total += lost
        raw = raw[bad * fb:]
        start = pos + bad
        if numpy:
            import numpy as np
            arr = np.frombuffer(raw, dtype=_NP[self.value_type])
            return start, arr.reshape(-1, self.channels * self.values_per_channel), lost
        return start, list(struct.iter_unpack(self._fmt, raw)), lost

    def read_views(self, max_frames=4096):
        """Zero-copy: (start, [views], lost) with up to two read-only numpy views over the ring
        (the second after the wrap). Call validate(start, n) after using them and discard the
        first `bad` frames' results. Advances the position."""
        import numpy as np
        _, n, lost = self._begin(max_frames)
        start, views = self.pos, []
        nval = self.channels * self.values_per_channel
        for off, k in (self._pieces(self.pos, n) if n else []):
            v = np.frombuffer(self._mm, dtype=_NP[self.value_type], count=k * nval, offset=off)
            views.append(v.reshape(k, nval))
        self.pos += n
        self.lost_total += lost
        return start, views, lost

    # -- time ----------------------------------------------------------------------------------
    def anchors(self):
        self._check()
        count = self._u32(0x180)
        self._fence()
        out = []
        for k in range(min(count, ANCHOR_SLOTS)):
            base = OFF_ANCHORS + ((count - 1 - k) % ANCHOR_SLOTS) * ANCHOR_BYTES
            for _ in range(100):
                s1 = self._u32(base)
                self._fence()
                if s1 & 1:
                    continue
                lo = struct.unpack_from("<IIIIIIII", self._mv, base)
                self._fence()
                if self._u32(base) != s1:
                    continue
                b = struct.pack("<8I", *lo)
                flags, frame, real_ns, rate = struct.unpack_from("<4xIQqd", b)
                out.append((frame, real_ns, rate, flags))
                break
        return out

    def time_of(self, j, anchors=None):
        a = self.anchors() if anchors is None else anchors
        if not a:
            return None
        before = [x for x in a if x[0] <= j]
        frame, real_ns, rate, _ = max(before) if before else min(a)
        if rate > 0:
            x = (j - frame) * 1e9 / rate
            return real_ns + int(math.copysign(math.floor(abs(x) + 0.5), x))
        return real_ns if j == frame else None


def _fmt_value(v, vt):
    if vt == 7:
        return "%.9g" % v
    if vt == 8:
        return "%.17g" % v
    return "%d" % v


def main(argv):
    """python3 ringrelay_shm.py REGION [--last N] [--numpy]: CSV like `ringrelay tail`."""
    if len(argv) < 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    use_np = "--numpy" in argv
    try:
        r = Region(argv[1])
    except (OSError, RegionError) as e:
        print("ringrelay_shm: %s" % e, file=sys.stderr)
        return 1
    try:
        _print_csv(r, use_np, argv)
    except RegionError as e:
        print("ringrelay_shm: %s" % e, file=sys.stderr)
        return 1
    finally:
        r.close()
    return 0


def _print_csv(r, use_np, argv):
    """The CSV body of main; RegionError when the region is cut short under it."""
    if "--last" in argv:
        r.seek_last(int(argv[argv.index("--last") + 1]))
    end = r.head()
    print("frame,time_ns," + ",".join(r.columns()))
    anchors = r.anchors()
    while r.pos < end:
        start, frames, lost = r.read(min(end - r.pos, 4096), numpy=use_np)
        if lost:
            print("ringrelay_shm: lost %d frames before %d" % (lost, start), file=sys.stderr)
        for k in range(len(frames)):
            t = r.time_of(start + k, anchors)
            vals = ",".join(_fmt_value(v, r.value_type) for v in frames[k].tolist()
                            ) if use_np else ",".join(_fmt_value(v, r.value_type)
                                                       for v in frames[k])
            print("%d,%s,%s" % (start + k, "" if t is None else t, vals))
        if len(frames) == 0 and lost == 0:
            break


if __name__ == "__main__":
    sys.exit(main(sys.argv))
