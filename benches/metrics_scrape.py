#!/usr/bin/env python3
"""Relay throughput with a /metrics scrape every 100 ms against none, in one run.

A TCP 1-to-1 channel on the buffer path (splice = off, so every byte passes through the pool
the metrics server also borrows from): a producer pushes SIZE bytes into the relay's
tcp-listen:// input, a collector reads them from its tcp:// output. Each case runs RUNS times,
alternating; the script prints each run, the medians and their ratio.

usage: benches/metrics_scrape.py [--bin target/release/ringrelay] [--mib 512] [--runs 3]
"""
import argparse, os, signal, socket, statistics, subprocess, sys, tempfile, threading, time, urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run_once(binary, size, scrape):
    col = socket.socket()
    col.bind(("127.0.0.1", 0))
    col.listen(1)
    out_port = col.getsockname()[1]
    in_port, m_port = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="rr-scrape-")
    conf = os.path.join(d, "r.conf")
    with open(conf, "w") as f:
        f.write(f"[global]\nshm_dir = {d}/shm\nmetrics = 127.0.0.1:{m_port}\nlog_level = warn\n\n"
                f"[channel bulk]\ninput = tcp-listen://127.0.0.1:{in_port}\n"
                f"output = tcp://127.0.0.1:{out_port} on_slow=block\nsplice = off\n")
    relay = subprocess.Popen([binary, "run", "-c", conf], stderr=subprocess.DEVNULL)
    got = [0]
    done = threading.Event()

    def collect():
        c, _ = col.accept()
        buf = bytearray(1 << 20)
        while got[0] < size:
            n = c.recv_into(buf)
            if n == 0:
                break
            got[0] += n
        done.set()
        c.close()

    threading.Thread(target=collect, daemon=True).start()
    for _ in range(200):
        try:
            p = socket.create_connection(("127.0.0.1", in_port))
            break
        except OSError:
            time.sleep(0.02)
    scrapes = [0]
    stop = threading.Event()

    def scraper():
        url = f"http://127.0.0.1:{m_port}/metrics"
        while not stop.is_set():
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
            scrapes[0] += 1
            stop.wait(0.1)

    if scrape:
        threading.Thread(target=scraper, daemon=True).start()
    chunk = b"\x5a" * (1 << 20)
    t0 = time.monotonic()
    sent = 0
    while sent < size:
        p.sendall(chunk)
        sent += len(chunk)
    done.wait(120)
    dt = time.monotonic() - t0
    stop.set()
    p.close()
    relay.send_signal(signal.SIGTERM)
    relay.wait(20)
    col.close()
    assert got[0] >= size, f"collector got {got[0]} of {size}"
    return size / dt / 1e6, scrapes[0]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--bin", default="target/release/ringrelay")
    a.add_argument("--mib", type=int, default=512)
    a.add_argument("--runs", type=int, default=3)
    o = a.parse_args()
    size = o.mib << 20
    res = {False: [], True: []}
    for i in range(o.runs):
        for scrape in (False, True):
            mbs, n = run_once(o.bin, size, scrape)
            res[scrape].append(mbs)
            print(f"run {i + 1} {'scrape every 100 ms' if scrape else 'no scrape':>20}: {mbs:8.1f} MB/s"
                  + (f" ({n} scrapes)" if scrape else ""), flush=True)
    a_, b_ = statistics.median(res[False]), statistics.median(res[True])
    print(f"median: no scrape {a_:.1f} MB/s, scrape every 100 ms {b_:.1f} MB/s, ratio {b_ / a_:.3f}")


if __name__ == "__main__":
    main()
