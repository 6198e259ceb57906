#!/bin/bash
# Checks contrib/grafana/ringrelay.json against a real Prometheus scraping a real relay:
# starts a relay with `metrics` on loopback and traffic on two channels (a UDP channel at a
# steady rate, and a TCP channel whose collector goes away halfway and comes back), scrapes it
# every second with Debian's prometheus for DURATION seconds, asks Prometheus' HTTP API for
# every expression of every panel of the dashboard (the $channel variable as .*), fails when
# one of them returns no series, and plots them all into contrib/grafana/ringrelay-scrape.png
# (python3 with matplotlib).
# usage: [DURATION=70] [RINGRELAY=target/release/ringrelay] contrib/grafana/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
dur=${DURATION:-70}
relay_bin=${RINGRELAY:-target/release/ringrelay}
command -v prometheus >/dev/null || { echo "check: needs prometheus (apt-get install prometheus)" >&2; exit 1; }
python3 -c 'import matplotlib' 2>/dev/null || { echo "check: needs matplotlib (pip install matplotlib)" >&2; exit 1; }

work=$(mktemp -d /tmp/rr-grafana-check.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mport=$(port); pport=$(port); uin=$(port); uout=$(port); tin=$(port); tout=$(port)

# Sinks: a UDP one for the whole run, a TCP collector that leaves for 20 s halfway.
python3 - "$uout" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", int(sys.argv[1])))
while True: s.recv(65536)
PY
pids+=($!)
python3 - "$tout" "$dur" <<'PY' &
import socket, sys, time, threading
port, dur = int(sys.argv[1]), int(sys.argv[2])
def serve(until):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port)); l.listen(4); l.settimeout(0.5); conns = []
    while time.time() < until:
        try:
            c, _ = l.accept(); c.setblocking(False); conns.append(c)
        except socket.timeout: pass
        for c in conns:
            try: c.recv(1 << 20)
            except BlockingIOError: pass
    for c in conns: c.close()
    l.close()
t0 = time.time()
serve(t0 + dur / 2 - 10)
time.sleep(20)
serve(t0 + dur + 30)
PY
pids+=($!)

cat >"$work/ringrelay.conf" <<CONF
[global]
shm_dir = $work/shm
metrics = 127.0.0.1:$mport
health_grace = 5s

[channel udp_sine]
input = udp://127.0.0.1:$uin
output = udp://127.0.0.1:$uout

[channel tcp_bulk]
input = tcp-listen://127.0.0.1:$tin
output = tcp://127.0.0.1:$tout on_slow=drop max_backlog=1MiB
CONF
"$relay_bin" run -c "$work/ringrelay.conf" 2>"$work/relay.log" &
pids+=($!)
sleep 1
"$relay_bin" gen "udp://127.0.0.1:$uin" --format i16le --rate 20000 --packet-bytes 1000 --signal sine:5 --duration "$((dur + 5))s" &
pids+=($!)
"$relay_bin" gen "tcp://127.0.0.1:$tin" --format i16le --rate 200000 --signal noise --duration "$((dur + 5))s" &
pids+=($!)

cat >"$work/prometheus.yml" <<PROM
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: ringrelay
    static_configs:
      - targets: ["127.0.0.1:$mport"]
PROM
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$pport" >"$work/prometheus.log" 2>&1 &
pids+=($!)
start=$(date +%s)
echo "check: relay metrics on 127.0.0.1:$mport, prometheus on 127.0.0.1:$pport, ${dur}s of traffic"
sleep "$dur"
end=$(date +%s)

python3 - "$pport" "$start" "$end" contrib/grafana/ringrelay.json contrib/grafana/ringrelay-scrape.png <<'PY'
import json, sys, urllib.parse, urllib.request
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
pport, start, end, dash_path, png = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
dash = json.load(open(dash_path))
up = json.load(urllib.request.urlopen(f"http://127.0.0.1:{pport}/api/v1/targets"))
health = [t["health"] for t in up["data"]["activeTargets"]]
assert health == ["up"], f"the relay target is not up in Prometheus: {up}"
def query(expr):
    expr = expr.replace("$__rate_interval", "5s").replace("$channel", ".*")
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 1})
    r = json.load(urllib.request.urlopen(f"http://127.0.0.1:{pport}/api/v1/query_range?{q}"))
    assert r["status"] == "success", r
    return r["data"]["result"]
panels = dash["panels"]
fig, axes = plt.subplots((len(panels) + 1) // 2, 2, figsize=(16, 4 * ((len(panels) + 1) // 2)))
failed = []
for ax, p in zip(axes.flat, panels):
    n = 0
    for t in p["targets"]:
        for series in query(t["expr"]):
            n += 1
            m = series["metric"]
            label = t["legendFormat"]
            for k, v in m.items():
                label = label.replace("{{" + k + "}}", v)
            xs = [float(v[0]) - start for v in series["values"]]
            ys = [float(v[1]) for v in series["values"]]
            ax.plot(xs, ys, label=label, drawstyle="steps-post" if p["type"] == "state-timeline" else "default")
    print(f"panel {p['title']!r}: {n} series")
    if n == 0:
        failed.append(p["title"])
    ax.set_title(f"{p['title']} ({p['fieldConfig']['defaults']['unit']})")
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7)
fig.suptitle("ringrelay dashboard queries, scraped by Prometheus from a running relay")
fig.tight_layout()
fig.savefig(png, dpi=80)
print(f"wrote {png}")
if failed:
    sys.exit(f"panels without series: {failed}")
PY
echo "check: every panel has series"
