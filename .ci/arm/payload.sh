#!/bin/sh
# Smoke payload run inside the ARM guest (busybox only) by .ci/arm/smoke.sh via arm-vm.
# /payload holds: ringrelay (static), run (this script), stages (which stages to run: stage
# names or "all"), build-info, and optionally repeat (run the stages that many times, each
# round in a fresh directory: how flaky stages are proven not to be). Every stage prints PASS or FAIL; the exit code is the number of
# failed stages. Everything is bounded with `timeout`: the guest is 10-30x slower than a host.
cd /payload || exit 100
PATH=/payload:$PATH
export PATH
STAGES=$(cat stages 2>/dev/null || echo all)
[ "$STAGES" = all ] && STAGES="info help probe check gen udp sqpoll tcp shm reload term splice serial lines rss"
FAILED=0
T=/tmp/smoke
mkdir -p $T

pass() { echo "SMOKE PASS $1"; }
fail() { echo "SMOKE FAIL $1: $2"; FAILED=$((FAILED + 1)); }

stage_info() {
  echo "build: $(cat build-info 2>/dev/null)"
  echo "kernel: $(uname -a)"
  echo "memlock: $(ulimit -l 2>/dev/null)"
  pass info
}

# What this busybox offers (nc options differ between builds).
stage_tools() {
  busybox 2>&1 | sed -n '/Currently defined functions/,$p' | tr -s ' \n' ' '
  echo
  nc --help 2>&1 | head -20
  pass tools
}

stage_help() {
  ringrelay --help > $T/help.out 2>&1
  if grep -q "run" $T/help.out && grep -q "probe" $T/help.out; then pass help
  else fail help "no usage text: $(head -c 300 $T/help.out)"; fi
}

stage_probe() {
  timeout 60 ringrelay probe > $T/probe.out 2>&1
  rc=$?
  cat $T/probe.out
  timeout 60 ringrelay probe --baseline > $T/probe-b.out 2>&1
  rcb=$?
  if [ $rc -eq 0 ] && [ $rcb -eq 0 ]; then pass probe
  else fail probe "exit $rc (baseline: $rcb)"; fi
}

# `ringrelay check` on a config using every kind of endpoint.
stage_check() {
  cat > $T/check.conf <<EOC
[global]
buffer_count = 32
[channel a]
input = udp://0.0.0.0:5000 group=239.1.1.1 rcvbuf=1MiB
output = tcp-listen://127.0.0.1:6000 max_clients=4 allow=127.0.0.0/8
output = udp://127.0.0.1:7001
output = file:///tmp/a.raw rotate=1MiB keep=2
sample = i16le
decimate = minmax:10,100
[channel b]
input = tcp://127.0.0.1:5001
output = unix-listen:///tmp/b.sock
EOC
  if timeout 30 ringrelay check -c $T/check.conf > $T/check.out 2>&1; then pass check
  else cat $T/check.out; fail check "valid config refused"; fi
  echo "bogus = 1" >> $T/check.conf
  timeout 30 ringrelay check -c $T/check.conf > $T/check2.out 2>&1
  rc=$?
  if [ $rc = 1 ] && grep -q "check.conf:13" $T/check2.out; then pass check-error
  else cat $T/check2.out; fail check-error "exit $rc, want 1 with FILE:LINE"; fi
}

# The generator alone, into a busybox nc listener: exact byte count.
stage_gen() {
  nc -l -p 6900 > $T/gen.raw & c=$!
  sleep 0.5
  timeout 60 ringrelay gen tcp://127.0.0.1:6900 --format i16le --signal sine:440 --rate max \
    --bytes 1MiB > $T/gen.log 2>&1
  rg=$?
  i=0; while kill -0 $c 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  kill $c 2>/dev/null
  n=$(wc -c < $T/gen.raw | tr -d ' ')
  if [ $rg = 0 ] && [ "$n" = 1048576 ]; then pass gen; else cat $T/gen.log; fail gen "exit $rg, $n bytes"; fi
}

# ---- relay stages: each starts its relays with logs in $T/NAME.log and stops them itself ----

# Waits (bounded) until log file $1 shows the ready line.
wait_ready() {
  i=0
  while [ $i -lt 300 ]; do
    grep -q "ready: " "$1" 2>/dev/null && return 0
    sleep 0.1; i=$((i + 1))
  done
  echo "--- $1:"; cat "$1"; return 1
}

# Sends SIGTERM to pid $1 and waits for it (SIGKILL after 30 s); its exit code goes to $RC.
# (Not through $(...): a subshell cannot wait for its parent's children.)
term_wait() {
  kill -TERM "$1" 2>/dev/null
  i=0
  while kill -0 "$1" 2>/dev/null && [ $i -lt 300 ]; do
    # A zombie still answers kill -0: stop waiting once it has exited.
    grep -q '^State:.*Z' /proc/$1/status 2>/dev/null && break
    sleep 0.1; i=$((i + 1))
  done
  kill -KILL "$1" 2>/dev/null
  wait "$1"; RC=$?
}

# Size of file $1 in bytes (0 when missing).
size() { if [ -f "$1" ]; then wc -c < "$1" | tr -d ' '; else echo 0; fi; }

# UDP fan-out: one UDP input to two UDP outputs (received by two sink relays writing files)
# and a file; all three must hold the same bytes, all the generator sent.
stage_udp() {
  d=$T/udp; mkdir -p $d
  ringrelay run --input udp://127.0.0.1:5101 --output file://$d/s1.raw > $d/s1.log 2>&1 & s1=$!
  ringrelay run --input udp://127.0.0.1:5102 --output file://$d/s2.raw > $d/s2.log 2>&1 & s2=$!
  ringrelay run --input udp://127.0.0.1:5100 --output udp://127.0.0.1:5101 \
    --output udp://127.0.0.1:5102 --output file://$d/direct.raw > $d/relay.log 2>&1 & r=$!
  if ! wait_ready $d/s1.log || ! wait_ready $d/s2.log || ! wait_ready $d/relay.log; then
    kill $s1 $s2 $r 2>/dev/null; fail udp "relays not ready"; return
  fi
  timeout 60 ringrelay gen udp://127.0.0.1:5100 --format i16le --signal counter \
    --rate 20000 --frames 40000 --packet-bytes 1000 > $d/gen.log 2>&1
  sleep 1
  term_wait $r; rr=$RC; term_wait $s1; r1=$RC; term_wait $s2; r2=$RC
  want=80000
  sums=$(md5sum $d/direct.raw $d/s1.raw $d/s2.raw 2>/dev/null | awk '{print $1}' | sort -u | wc -l)
  echo "udp: direct=$(size $d/direct.raw) s1=$(size $d/s1.raw) s2=$(size $d/s2.raw) want=$want exits=$rr/$r1/$r2"
  if [ "$(size $d/direct.raw)" = $want ] && [ "$(size $d/s1.raw)" = $want ] &&
     [ "$(size $d/s2.raw)" = $want ] && [ "$sums" = 1 ] && [ "$rr$r1$r2" = 000 ]; then
    pass udp
  else
    tail -5 $d/relay.log; fail udp "fan-out mismatch"
  fi
}

# The same UDP fan-out through a relay that insists on SQPOLL (auto leaves it off on 2 CPUs).
stage_sqpoll() {
  d=$T/sqpoll; mkdir -p $d
  printf '[global]\nsqpoll = on\nshm_dir = %s/shm\n[channel q]\ninput = udp://127.0.0.1:5150\noutput = udp://127.0.0.1:5151\noutput = file://%s/direct.raw\n' $d $d > $d/conf
  ringrelay run --input udp://127.0.0.1:5151 --output file://$d/s1.raw > $d/s1.log 2>&1 & s1=$!
  ringrelay run -c $d/conf > $d/relay.log 2>&1 & r=$!
  if ! wait_ready $d/s1.log || ! wait_ready $d/relay.log; then
    kill $s1 $r 2>/dev/null; fail sqpoll "relays not ready"; return
  fi
  grep -i "sqpoll" $d/relay.log | head -2
  timeout 60 ringrelay gen udp://127.0.0.1:5150 --format i16le --signal counter \
    --rate 20000 --frames 40000 --packet-bytes 1000 > $d/gen.log 2>&1
  sleep 1
  term_wait $r; rr=$RC; term_wait $s1; r1=$RC
  echo "sqpoll: direct=$(size $d/direct.raw) s1=$(size $d/s1.raw) want=80000 exits=$rr/$r1"
  if [ "$(size $d/direct.raw)" = 80000 ] && cmp -s $d/direct.raw $d/s1.raw && [ "$rr$r1" = 00 ]; then
    pass sqpoll
  else
    tail -5 $d/relay.log; fail sqpoll "fan-out with SQPOLL"
  fi
}

# TCP fan-out: a TCP producer to a subscriber that keeps up, one that stalls (its nc writes into
# a pipe nobody reads; it has its own output with a small max_backlog) and a file. The stalled
# one is disconnected; the other and the file get every byte, in order.
# The subscribers are busybox nc run in the background: their standard input is at end of file,
# so they half-close at once and go on reading, which a subscriber's FIN means only with
# on_fin=keep (by default a FIN is taken as the subscriber leaving, and releases it).
stage_tcp() {
  d=$T/tcp; mkdir -p $d
  cat > $d/conf <<EOC
[global]
buffer_count = 64
shm_dir = $d/shm
[channel t]
input = tcp-listen://127.0.0.1:5200
output = tcp-listen://127.0.0.1:6200 on_fin=keep
output = tcp-listen://127.0.0.1:6201 max_backlog=64KiB on_fin=keep
output = file://$d/ref.raw
EOC
  ringrelay run -c $d/conf > $d/relay.log 2>&1 & r=$!
  wait_ready $d/relay.log || { kill $r; fail tcp "relay not ready"; return; }
  nc 127.0.0.1 6200 > $d/fast.raw & f=$!
  nc 127.0.0.1 6201 | sleep 600 &
  sleep 1
  # Paced at 3 MB/s: busybox nc under emulation must keep up. 12 MiB is well beyond what the
  # kernel buffers of the stalled connection absorb (up to 4 MiB of send buffer on loopback).
  timeout 120 ringrelay gen tcp://127.0.0.1:5200 --format u8 --signal counter --rate 3000000 \
    --bytes 12MiB > $d/gen.log 2>&1
  rg=$?
  sleep 2
  term_wait $r; rr=$RC
  sleep 1; kill $f 2>/dev/null
  want=12582912
  stalled=$(grep "output tcp-listen://127.0.0.1:6201" $d/relay.log | tail -1)
  echo "tcp: ref=$(size $d/ref.raw) fast=$(size $d/fast.raw) gen=$rg exit=$rr"
  echo "tcp: stalled output: $stalled"
  if [ "$(size $d/ref.raw)" = $want ] && [ "$(size $d/fast.raw)" = $want ] &&
     cmp -s $d/ref.raw $d/fast.raw && [ "$rr" = 0 ] && echo "$stalled" | grep -q "disconnects=1"; then
    pass tcp
  else
    tail -5 $d/relay.log; fail tcp "subscriber fan-out"
  fi
}

# Decimation into shared memory, read back with `ringrelay tail`.
stage_shm() {
  d=$T/shm; mkdir -p $d
  cat > $d/conf <<EOC
[global]
shm_dir = $d/regions
[channel s]
input = udp://127.0.0.1:5300
output = file://$d/raw.raw
sample = i16le
sample_rate = 1000
decimate = mean:10
# f32 input runs the NEON running-window kernels (mean and minmax have their own).
[channel f]
input = udp://127.0.0.1:5301
output = file://$d/f.raw
sample = f32le
interleave = 4
sample_rate = 1000
decimate = minmax:10,100
[channel g]
input = udp://127.0.0.1:5302
output = file://$d/g.raw
sample = f32le
interleave = 2
sample_rate = 1000
decimate = mean:10
EOC
  ringrelay run -c $d/conf > $d/relay.log 2>&1 & r=$!
  wait_ready $d/relay.log || { kill $r; fail shm "relay not ready"; return; }
  timeout 60 ringrelay gen udp://127.0.0.1:5300 --format i16le --signal counter --rate 10000 \
    --frames 1000 --packet-bytes 200 > $d/gen.log 2>&1
  timeout 60 ringrelay gen udp://127.0.0.1:5301 --format f32le --interleave 4 --rate 10000 \
    --frames 1000 --packet-bytes 400 > $d/gen-f.log 2>&1
  timeout 60 ringrelay gen udp://127.0.0.1:5302 --format f32le --interleave 2 --rate 10000 \
    --frames 1000 --packet-bytes 400 > $d/gen-g.log 2>&1
  sleep 1
  timeout 30 ringrelay tail s --shm-dir $d/regions --format csv > $d/tail.csv 2> $d/tail.err
  rt=$?
  timeout 30 ringrelay tail f --shm-dir $d/regions --format csv > $d/tail-f.csv 2>> $d/tail.err
  rf=$?
  timeout 30 ringrelay tail g --shm-dir $d/regions --format csv > $d/tail-g.csv 2>> $d/tail.err
  rg=$?
  term_wait $r; rr=$RC
  lines=$(wc -l < $d/tail.csv | tr -d ' ')
  lf=$(wc -l < $d/tail-f.csv | tr -d ' ')
  lg=$(wc -l < $d/tail-g.csv | tr -d ' ')
  echo "shm: tail exit=$rt/$rf/$rg lines=$lines/$lf/$lg relay exit=$rr; first rows:"
  head -3 $d/tail.csv; head -2 $d/tail-f.csv; head -2 $d/tail-g.csv
  # 1000 frames / 10 = 100 decimated frames plus the header line, on each channel.
  if [ $rt = 0 ] && [ "$lines" = 101 ] && head -1 $d/tail.csv | grep -q '^frame,time_ns' &&
     [ $rf = 0 ] && [ "$lf" = 101 ] && [ $rg = 0 ] && [ "$lg" = 101 ]; then
    pass shm
  else
    cat $d/tail.err; fail shm "tail output"
  fi
}

# SIGHUP reload while data flows: the unchanged channel loses nothing across 5 reloads, an
# added channel starts, an invalid file is refused and the relay keeps running.
stage_reload() {
  d=$T/reload; mkdir -p $d
  cat > $d/conf <<EOC
[global]
shm_dir = $d/shm
[channel a]
input = udp://127.0.0.1:5400
output = file://$d/a.raw
EOC
  ringrelay run -c $d/conf > $d/relay.log 2>&1 & r=$!
  wait_ready $d/relay.log || { kill $r; fail reload "relay not ready"; return; }
  timeout 60 ringrelay gen udp://127.0.0.1:5400 --format i16le --signal counter --rate 10000 \
    --frames 30000 --packet-bytes 500 > $d/gen.log 2>&1 & g=$!
  cat >> $d/conf <<EOC
[channel b]
input = udp://127.0.0.1:5401
output = file://$d/b.raw
EOC
  for i in 1 2 3 4 5; do kill -HUP $r; sleep 0.4; done
  cp $d/conf $d/good; echo "bogus_key = 1" >> $d/conf; kill -HUP $r; sleep 0.5; cp $d/good $d/conf
  wait $g
  ringrelay gen udp://127.0.0.1:5401 --format u8 --signal counter --rate max \
    --bytes 100 > /dev/null 2>&1
  sleep 1
  alive=0; kill -0 $r 2>/dev/null && alive=1
  term_wait $r; rr=$RC
  echo "reload: a=$(size $d/a.raw) (want 60000) b=$(size $d/b.raw) alive=$alive exit=$rr"
  if [ "$(size $d/a.raw)" = 60000 ] && [ "$(size $d/b.raw)" = 100 ] && [ $alive = 1 ] &&
     [ "$rr" = 0 ]; then
    pass reload
  else
    tail -8 $d/relay.log; fail reload "data lost or channel missing"
  fi
}

# SIGTERM right after the data: queued output is flushed to a collector and a file, exit 0.
# The collector is busybox nc, which half-closes at once (stdin is /dev/null): on_fin=keep.
stage_term() {
  d=$T/term; mkdir -p $d
  nc -l -p 6500 > $d/col.raw & c=$!
  sleep 0.5
  ringrelay run --input tcp-listen://127.0.0.1:5500 --output "tcp://127.0.0.1:6500 on_fin=keep" \
    --output file://$d/file.raw > $d/relay.log 2>&1 & r=$!
  wait_ready $d/relay.log || { kill $r $c; fail term "relay not ready"; return; }
  sleep 0.5
  timeout 60 ringrelay gen tcp://127.0.0.1:5500 --format u8 --signal counter --rate max \
    --bytes 4MiB > $d/gen.log 2>&1
  term_wait $r; rr=$RC
  i=0; while kill -0 $c 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill $c 2>/dev/null
  echo "term: collector=$(size $d/col.raw) file=$(size $d/file.raw) exit=$rr"
  if [ "$(size $d/col.raw)" = 4194304 ] && [ "$(size $d/file.raw)" = 4194304 ] && [ "$rr" = 0 ]; then
    pass term
  else
    tail -5 $d/relay.log; fail term "flush on SIGTERM"
  fi
}

# The splice path: a 1-to-1 TCP channel (splice = auto splices it) moves 4 MiB byte-exact
# through its pipe, and the start-up line says it spliced; then the same with the baseline
# (Linux 5.10) feature set.
stage_splice() {
  d=$T/splice; mkdir -p $d
  # The reference: the same deterministic counter straight from the generator.
  nc -l -p 6601 > $d/ref.raw & c=$!
  sleep 0.5
  timeout 60 ringrelay gen tcp://127.0.0.1:6601 --format u8 --signal counter --rate max \
    --bytes 4MiB > $d/gen-ref.log 2>&1
  i=0; while kill -0 $c 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  kill $c 2>/dev/null
  for feat in auto baseline; do
    nc -l -p 6600 > $d/col-$feat.raw & c=$!
    sleep 0.5
    RINGRELAY_FEATURES=$feat ringrelay run --input tcp-listen://127.0.0.1:5600 \
      --output "tcp://127.0.0.1:6600 on_fin=keep" > $d/relay-$feat.log 2>&1 & r=$!
    wait_ready $d/relay-$feat.log || { kill $r $c; fail splice "relay not ready ($feat)"; return; }
    sleep 0.5
    timeout 60 ringrelay gen tcp://127.0.0.1:5600 --format u8 --signal counter --rate max \
      --bytes 4MiB > $d/gen-$feat.log 2>&1
    term_wait $r; rr=$RC
    i=0; while kill -0 $c 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill $c 2>/dev/null
    spliced=no; grep -q "splice on (1 channel)" $d/relay-$feat.log && spliced=yes
    echo "splice ($feat): collector=$(size $d/col-$feat.raw) spliced=$spliced exit=$rr"
    if [ "$(size $d/col-$feat.raw)" != 4194304 ] || [ $spliced != yes ] || [ "$rr" != 0 ]; then
      tail -5 $d/relay-$feat.log; fail splice "$feat"; return
    fi
    if ! cmp -s $d/ref.raw $d/col-$feat.raw; then
      fail splice "bytes differ ($feat)"; return
    fi
  done
  pass splice
}

# Resident memory of a relay with 8 channels and the default buffers (kB, from /proc).
stage_rss() {
  d=$T/rss; mkdir -p $d
  { echo "[global]"; echo "shm_dir = $d/shm"
    for i in 0 1 2 3 4 5 6 7; do
      echo "[channel c$i]"; echo "input = udp://127.0.0.1:57$i$i"
      echo "output = tcp-listen://127.0.0.1:67$i$i"; echo "output = file://$d/c$i.raw"
      echo "sample = i16le"; echo "decimate = mean:10"
    done; } > $d/conf
  ringrelay run -c $d/conf > $d/relay.log 2>&1 & r=$!
  wait_ready $d/relay.log || { kill $r; fail rss "relay not ready"; return; }
  for i in 0 1 2 3 4 5 6 7; do
    ringrelay gen udp://127.0.0.1:57$i$i --rate 20000 --frames 10000 > /dev/null 2>&1
  done
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$r/status)
  hwm=$(awk '/^VmHWM/ {print $2}' /proc/$r/status)
  term_wait $r; rr=$RC
  echo "rss: VmRSS=${rss}kB VmHWM=${hwm}kB exit=$rr"
  if [ -n "$hwm" ] && [ "$hwm" -lt 32768 ] && [ "$rr" = 0 ]; then pass rss
  else fail rss "resident memory ${hwm}kB (limit 32768kB)"; fi
}

# Serial input through an unplug and a replug. Busybox has no way to make a pseudo-terminal:
# `ringrelay gen pty://PATH` plays the device (a new pty linked at PATH, written on its master;
# its end is the unplug: the link goes and the tty hangs up), twice. Both runs' bytes must be in
# the relay's file in order (two u8 counters from 0), with two unplugs and one reopen logged.
stage_serial() {
  d=$T/serial
  mkdir -p $d/by-id
  # The guest's /dev may lack the pty file system: ptmx finds its ptys in /dev/pts.
  if ! grep -q ' /dev/pts devpts ' /proc/mounts; then
    mkdir -p /dev/pts && mount -t devpts -o ptmxmode=0666 devpts /dev/pts
  fi
  [ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
  rm -f $d/gps.raw
  cat > $d/conf <<EOC
[global]
buffer_count = 32
[channel gps]
input = serial://$d/by-id/usb-gps-if00 baud=4800
output = file://$d/gps.raw
EOC
  ringrelay run -c $d/conf > $d/relay.log 2>&1 & r=$!
  wait_ready $d/relay.log || { kill $r; fail serial "relay not ready"; return; }
  timeout 60 ringrelay gen pty://$d/by-id/usb-gps-if00 --format u8 --signal counter \
    --rate 20000 --bytes 3000 > $d/gen1.log 2>&1
  g1=$?
  i=0; while [ "$(grep -c ' gone ' $d/relay.log)" -lt 1 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  timeout 60 ringrelay gen pty://$d/by-id/usb-gps-if00 --format u8 --signal counter \
    --rate 20000 --bytes 2000 > $d/gen2.log 2>&1
  g2=$?
  i=0; while [ "$(size $d/gps.raw)" -lt 5000 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  i=0; while [ "$(grep -c ' gone ' $d/relay.log)" -lt 2 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  term_wait $r; rr=$RC
  n=$(size $d/gps.raw)
  head -c 2000 $d/gps.raw > $d/first
  tail -c 2000 $d/gps.raw > $d/second
  gone=$(grep -c ' gone ' $d/relay.log)
  again=$(grep -c 'reopened' $d/relay.log)
  start=$(head -c 4 $d/gps.raw | od -An -tu1 | tr -s ' ')
  if [ $g1 = 0 ] && [ $g2 = 0 ] && [ "$n" = 5000 ] && cmp -s $d/first $d/second \
    && [ "$start" = " 0 1 2 3" ] && [ "$gone" = 2 ] && [ "$again" = 1 ] && [ "$rr" = 0 ]; then
    pass serial
  else
    cat $d/relay.log $d/gen1.log $d/gen2.log
    fail serial "gen $g1/$g2, $n of 5000 bytes, start '$start', $gone unplugs, $again reopens, exit $rr"
  fi
}

# Line framing (NMEA 0183): 300 sentences of 67 bytes reach a tcp-listen input in writes of
# 200 bytes that cut sentences; the channel (framing = line) sends one datagram per sentence to
# a second channel, which records each datagram behind its length (framing = u32be), so the
# file shows where the datagrams began and ended.
stage_lines() {
  d=$T/lines; mkdir -p $d
  cat > $d/conf <<EOC
[global]
buffer_count = 64
shm_dir = $d/shm
[channel nmea]
input = tcp-listen://127.0.0.1:5300
framing = line
output = udp://127.0.0.1:5301
output = file://$d/lines.raw
[channel rec]
input = udp://127.0.0.1:5301
framing = u32be
output = file://$d/dgrams.raw
EOC
  rm -f $d/in.txt $d/want.raw
  i=1
  while [ $i -le 300 ]; do
    printf '$GPGGA,%06d,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n' $i >> $d/in.txt
    printf '\000\000\000\103$GPGGA,%06d,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n' $i >> $d/want.raw
    i=$((i + 1))
  done
  ringrelay run -c $d/conf > $d/relay.log 2>&1 & r=$!
  wait_ready $d/relay.log || { kill $r; fail lines "relay not ready"; return; }
  # Paced as a receiver sends (a few sentences at a time), in writes that cut sentences: a
  # UDP output queues one chunk per line against its buffer quota (8 here), so one read of
  # more lines than that would drop the rest, counted.
  { i=0; while [ $i -lt 101 ]; do dd if=$d/in.txt bs=200 skip=$i count=1 2>/dev/null; sleep 0.02; i=$((i + 1)); done; } | timeout 60 nc 127.0.0.1 5300
  i=0; while [ "$(size $d/dgrams.raw)" -lt "$(size $d/want.raw)" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  term_wait $r; rr=$RC
  echo "lines: in=$(size $d/in.txt) lines=$(size $d/lines.raw) dgrams=$(size $d/dgrams.raw) want=$(size $d/want.raw) exit=$rr"
  if cmp -s $d/in.txt $d/lines.raw && cmp -s $d/want.raw $d/dgrams.raw && [ "$rr" = 0 ]; then
    pass lines
  else
    tail -5 $d/relay.log; fail lines "sentences are not one datagram each"
  fi
}

REPEAT=$(cat repeat 2>/dev/null || echo 1)
round=1
while [ $round -le "$REPEAT" ]; do
  [ "$REPEAT" -gt 1 ] && { T=/tmp/smoke/round-$round; mkdir -p $T; echo "=== round $round of $REPEAT"; }
  for s in $STAGES; do
    echo "=== stage $s"
    if type "stage_$s" >/dev/null 2>&1; then "stage_$s"; else fail "$s" "no such stage"; fi
  done
  round=$((round + 1))
done
echo "SMOKE SUMMARY failed=$FAILED stages=\"$STAGES\" rounds=$REPEAT"
exit $FAILED
