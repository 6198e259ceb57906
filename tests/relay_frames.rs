//! Records at the edge: late subscribers of a channel of interleaved samples start on a frame
//! boundary, a dropping subscriber drops whole frames, an rtl_tcp-like producer's 12-byte
//! header (`preamble = 12`) reaches every late subscriber first (also after the producer
//! reconnects with another header), `framing = line` sends one datagram per NMEA sentence and
//! drops over-long lines, and a `u32be` channel's late subscriber starts at a length prefix.
//! Each scenario runs with both feature sets.
//!
//! The producers write in odd-sized pieces with pauses, so that the relay's reads end
//! mid-record: what a subscriber gets only lines up because the relay holds the straddling
//! record back and completes it from the next read.

#[macro_use]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

in_both_feature_sets!(
    late_subscribers_start_on_a_frame_boundary,
    dropping_subscriber_gets_whole_frames,
    rtl_tcp_header_reaches_every_late_subscriber,
    nmea_lines_become_one_datagram_each,
    udp_datagram_lines_to_udp_and_tcp,
    u32be_late_subscriber_starts_at_a_prefix,
);

/// Frame `k` of the i16 x2 pattern: its index as a little-endian u32 (4 bytes, one frame).
fn frame(k: u32) -> [u8; 4] {
    k.to_le_bytes()
}

/// Writes frames from 0 on, in odd-sized writes (1, 3, 5 ... 199 bytes, over and over) with a
/// short pause every `pause_every` writes, until `stop`; returns the bytes written.
fn odd_writer(
    mut s: TcpStream,
    stop: Arc<AtomicBool>,
    pause_every: u32,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut data = Vec::new();
        let mut k = 0u32;
        let mut sent = 0usize;
        let mut size = 1usize;
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            while data.len() < size {
                data.extend_from_slice(&frame(k));
                k += 1;
            }
            if s.write_all(&data[..size]).is_err() {
                break;
            }
            data.drain(..size);
            sent += size;
            size = if size >= 199 { 1 } else { size + 2 };
            n += 1;
            if n % pause_every == 0 {
                thread::sleep(Duration::from_micros(300));
            }
        }
        sent
    })
}

/// Whether `data` (whole frames only) is consecutive frames of the pattern; the first index.
fn consecutive_frames(data: &[u8]) -> Result<u32, String> {
    let whole = data.len() / 4 * 4;
    let mut first = None;
    for (i, f) in data[..whole].chunks(4).enumerate() {
        let v = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
        let k0 = *first.get_or_insert(v);
        if v != k0.wrapping_add(i as u32) {
            return Err(format!(
                "frame {i} is {v:#010x}, expected {:#010x} (first {k0:#010x})",
                k0.wrapping_add(i as u32)
            ));
        }
    }
    first.ok_or_else(|| "no whole frame".into())
}

/// 24 subscribers join one after another while a TCP producer writes odd-sized pieces of
/// i16 x2 frames: every one's first byte is a frame boundary, and its whole stream is
/// consecutive frames (none misaligned, none lost).
fn late_subscribers_start_on_a_frame_boundary(features: Features) {
    let dir = TempDir::new("frames-late");
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel iq]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} max_backlog=16MiB\nsample = i16le\ninterleave = 2\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let (input, subs_addr) = ch;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = odd_writer(connect_tcp(input), stop.clone(), 3);
    let mut subs = Vec::new();
    for i in 0..24 {
        thread::sleep(Duration::from_millis(15));
        subs.push(StreamSink::tcp(&format!("late subscriber {i}"), subs_addr));
    }
    for s in &subs {
        s.wait_len(4096, TRANSFER_TIMEOUT);
    }
    stop.store(true, Ordering::Relaxed);
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer");
    let mut bad = Vec::new();
    for s in &subs {
        if let Err(e) = s.with_data(consecutive_frames) {
            bad.push(format!("{}: {e}", s.name()));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} late subscribers misaligned:\n{}",
        bad.len(),
        subs.len(),
        bad.join("\n")
    );
    relay.stop();
}

/// A subscriber with `on_slow=drop` and a small backlog that reads slowly: it loses frames,
/// but what it gets is whole frames of the pattern, in order.
fn dropping_subscriber_gets_whole_frames(features: Features) {
    let dir = TempDir::new("frames-drop");
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "[global]\nshm_dir = {}\nshutdown_timeout = 5s\nbuffer_size = 4KiB\nbuffer_count = 256\n\n[channel iq]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} on_slow=drop max_backlog=8KiB sndbuf=4096\nsample = i16le\ninterleave = 2\n",
            dir.join("shm").display()
        );
        (conf, (input, subs))
    });
    let (input, subs_addr) = ch;
    let url = format!("tcp-listen://{subs_addr}");
    let mut slow = connect_tcp(subs_addr);
    let _ = socket2::SockRef::from(&slow).set_recv_buffer_size(4096);
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    thread::sleep(Duration::from_millis(100));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = odd_writer(connect_tcp(input), stop.clone(), 256);
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    while got.len() < 64 * 1024 && Instant::now() < deadline {
        let n = slow.read(&mut buf).expect("slow subscriber read");
        assert!(n > 0, "the relay closed the slow subscriber");
        got.extend_from_slice(&buf[..n]);
        thread::sleep(Duration::from_millis(2));
    }
    let drops = output_counter(&relay, &url, "drops");
    stop.store(true, Ordering::Relaxed);
    let sent = join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer");
    assert!(drops > 0, "the slow subscriber dropped nothing");
    // A frame read out of step mixes the counter's high bytes into its low ones and reads far
    // above every frame the producer wrote; a run of dropped frames, however long, cannot.
    let written = (sent / 4) as u32;
    let whole = got.len() / 4 * 4;
    let mut last: Option<u32> = None;
    for (i, f) in got[..whole].chunks(4).enumerate() {
        let v = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
        if let Some(p) = last {
            assert!(
                v > p && v < written,
                "frame {i} of the dropping subscriber is {v:#010x} after {p:#010x}: not a whole frame"
            );
        }
        last = Some(v);
    }
    relay.stop();
}

/// The I/Q pair `k` of the rtl_tcp-like producer: I even, Q odd, so a shifted stream shows.
fn iq(k: u32) -> [u8; 2] {
    let i = (k % 128) as u8 * 2;
    [i, i + 1]
}

/// Whether `data` is I/Q pairs of the pattern, each following the one before.
fn aligned_iq(data: &[u8]) -> Result<(), String> {
    let whole = data.len() / 2 * 2;
    let mut prev: Option<u8> = None;
    for (n, p) in data[..whole].chunks(2).enumerate() {
        if p[0] % 2 != 0 || p[1] != p[0] + 1 {
            return Err(format!("pair {n} is {p:?}: misaligned"));
        }
        if let Some(q) = prev {
            if p[0] != q.wrapping_add(2) {
                return Err(format!("pair {n} is {p:?} after I={q}: a gap"));
            }
        }
        prev = Some(p[0]);
    }
    Ok(())
}

/// An rtl_tcp-like producer: a 12-byte "RTL0" header written in two pieces, then u8 I/Q in
/// odd-sized writes. Late subscribers get the header first and then aligned pairs; after the
/// producer reconnects with another header, new late subscribers get the new one, and the
/// subscribers that stayed get it in-stream.
fn rtl_tcp_header_reaches_every_late_subscriber(features: Features) {
    let dir = TempDir::new("frames-rtl");
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel rtl]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} max_backlog=16MiB\npreamble = 12\nsample = u8\ninterleave = 2\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let (input, subs_addr) = ch;
    let headers: [&[u8; 12]; 2] = [
        b"RTL0\x00\x00\x00\x05\x00\x00\x00\x1d",
        b"RTL0\x00\x00\x00\x01\x00\x00\x00\x11",
    ];
    let mut stayed: Option<StreamSink> = None;
    for (round, header) in headers.iter().enumerate() {
        let mut p = connect_tcp(input);
        p.write_all(&header[..5]).unwrap();
        thread::sleep(Duration::from_millis(20));
        p.write_all(&header[5..]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut k = 0u32;
                let mut size = 1usize;
                let mut pending = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    while pending.len() < size {
                        pending.extend_from_slice(&iq(k));
                        k += 1;
                    }
                    if p.write_all(&pending[..size]).is_err() {
                        return;
                    }
                    pending.drain(..size);
                    size = if size >= 151 { 1 } else { size + 2 };
                    thread::sleep(Duration::from_micros(200));
                }
                // Whole pairs only before the producer leaves.
                let rest = pending.len() % 2;
                if rest == 1 {
                    let _ = p.write_all(&pending[..1]);
                }
            })
        };
        let late: Vec<StreamSink> = (0..6)
            .map(|i| {
                thread::sleep(Duration::from_millis(20));
                StreamSink::tcp(&format!("round {round} late subscriber {i}"), subs_addr)
            })
            .collect();
        for s in &late {
            s.wait_len(2048, TRANSFER_TIMEOUT);
            s.with_data(|d| {
                assert_eq!(
                    &d[..12],
                    &header[..],
                    "{}: the header comes first",
                    s.name()
                );
                if let Err(e) = aligned_iq(&d[12..]) {
                    panic!("{}: {e}", s.name());
                }
            });
        }
        stop.store(true, Ordering::Relaxed);
        join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer");
        if let Some(s) = &stayed {
            // It saw the first connection, then the new header in-stream.
            wait_for("the new header in-stream", TRANSFER_TIMEOUT, || {
                s.with_data(|d| d.windows(12).filter(|w| w[..4] == *b"RTL0").count() == 2)
            });
        }
        if stayed.is_none() {
            stayed = late.into_iter().next();
        }
        // The producer leaves; the relay drops the half pair it left.
        thread::sleep(Duration::from_millis(100));
    }
    relay.stop();
}

/// NMEA-like sentences over a TCP input with `framing = line`, written in odd-sized pieces, to
/// a UDP output: one datagram per sentence, byte-exact, and an over-long line dropped,
/// counted as malformed, with the next sentence intact.
fn nmea_lines_become_one_datagram_each(features: Features) {
    let dir = TempDir::new("frames-nmea");
    let sink = DatagramSink::bind("nmea sink", "127.0.0.1:0".parse().unwrap());
    let to = sink.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel gps]\ninput = tcp-listen://{input}\noutput = udp://{to}\nframing = line\nmax_line = 90\n",
            dir.global_section()
        );
        (conf, input)
    });
    let mut want: Vec<Vec<u8>> = Vec::new();
    let mut stream = Vec::new();
    for k in 0..400u32 {
        let s = format!(
            "$GPGGA,{:06},4807.038,N,01131.000,E,1,08,0.9,{}.4,M,46.9,M,,*47\r\n",
            k * 7,
            k % 1000
        );
        stream.extend_from_slice(s.as_bytes());
        want.push(s.into_bytes());
        if k == 200 {
            let long = format!("$GPTXT,{}*00\r\n", "X".repeat(200));
            stream.extend_from_slice(long.as_bytes());
        }
    }
    let mut p = connect_tcp(input);
    let mut at = 0;
    let mut size = 1;
    while at < stream.len() {
        let end = (at + size).min(stream.len());
        p.write_all(&stream[at..end]).unwrap();
        at = end;
        size = if size >= 97 { 1 } else { size + 4 };
        thread::sleep(Duration::from_micros(300));
    }
    wait_for("every sentence as a datagram", TRANSFER_TIMEOUT, || {
        sink.count() >= want.len()
    });
    assert_same_datagrams("nmea sink", &sink.datagrams(), &want);
    let line = output_counters_line(&relay, &format!("udp://{to}"));
    let log = relay.log();
    let input_line = log
        .lines()
        .rev()
        .find(|l| l.contains("counters: channel gps input"))
        .unwrap_or_else(|| panic!("no input counters line:\n{log}"));
    assert_eq!(counter_in(input_line, "malformed"), 1, "{input_line}");
    assert_eq!(counter_in(input_line, "partial"), 212, "{input_line}");
    assert_eq!(counter_in(&line, "datagrams"), want.len() as u64, "{line}");
    drop(p);
    relay.stop();
}

/// `framing = line` on a UDP input: a datagram of several lines goes to a UDP output as one
/// datagram per line, and to a TCP subscriber as whole lines (a `\n` added after a last line
/// that had none).
fn udp_datagram_lines_to_udp_and_tcp(features: Features) {
    let dir = TempDir::new("frames-udp-lines");
    let sink = DatagramSink::bind("line sink", "127.0.0.1:0".parse().unwrap());
    let to = sink.addr;
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel ais]\ninput = udp://{input}\noutput = udp://{to}\noutput = tcp-listen://{subs}\nframing = line\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let (input, subs) = ch;
    let sub = StreamSink::tcp("line subscriber", subs);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Pings until the subscriber is known to be connected.
    wait_for("the subscriber to be fed", TRANSFER_TIMEOUT, || {
        tx.send_to(b"!PING\r\n", input).unwrap();
        thread::sleep(Duration::from_millis(20));
        !sub.is_empty()
    });
    let pings = sink.count();
    tx.send_to(b"!AIVDM,1,1,,A,13u?etPv2;0n:dDPwUM1U1Cb069D,0*23\r\n!AIVDM,1,1,,B,100h00PP0@0Fo5:Jf>Eo,0*1C\r\n$GPZDA,1", input)
        .unwrap();
    tx.send_to(b"$GPRMC,2\r\n", input).unwrap();
    let want: Vec<&[u8]> = vec![
        b"!AIVDM,1,1,,A,13u?etPv2;0n:dDPwUM1U1Cb069D,0*23\r\n",
        b"!AIVDM,1,1,,B,100h00PP0@0Fo5:Jf>Eo,0*1C\r\n",
        b"$GPZDA,1",
        b"$GPRMC,2\r\n",
    ];
    wait_for("the lines as datagrams", TRANSFER_TIMEOUT, || {
        sink.count() >= pings + want.len()
    });
    let got = sink.datagrams();
    let want: Vec<Vec<u8>> = want.iter().map(|w| w.to_vec()).collect();
    assert_same_datagrams("line sink", &got[pings..], &want);
    let text: Vec<u8> = [&want[0][..], &want[1][..], b"$GPZDA,1\n", &want[3][..]].concat();
    wait_for("the lines on the subscriber", TRANSFER_TIMEOUT, || {
        sub.with_data(|d| d.ends_with(&text))
    });
    sub.with_data(|d| {
        let body = &d[d.len() - text.len()..];
        assert_eq!(body, &text[..]);
        assert!(
            d[..d.len() - text.len()]
                .split_inclusive(|&b| b == b'\n')
                .all(|l| l == b"!PING\r\n"),
            "only whole ping lines before"
        );
    });
    relay.stop();
}

/// A `framing = u32be` channel (UDP in, TCP subscribers out): a subscriber that joins while
/// datagrams flow starts at a length prefix and reads whole records.
fn u32be_late_subscriber_starts_at_a_prefix(features: Features) {
    let dir = TempDir::new("frames-u32be");
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel rec]\ninput = udp://{input}\noutput = tcp-listen://{subs}\nframing = u32be\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let (input, subs) = ch;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let len = 1 + (k as usize * 37) % 300;
                let d: Vec<u8> = (0..len).map(|i| (k as usize + i) as u8).collect();
                let _ = tx.send_to(&d, input);
                k += 1;
                if k % 8 == 0 {
                    thread::sleep(Duration::from_micros(500));
                }
            }
        })
    };
    let late: Vec<StreamSink> = (0..5)
        .map(|i| {
            thread::sleep(Duration::from_millis(30));
            StreamSink::tcp(&format!("u32be subscriber {i}"), subs)
        })
        .collect();
    for s in &late {
        s.wait_len(8192, TRANSFER_TIMEOUT);
    }
    stop.store(true, Ordering::Relaxed);
    join_with_timeout(sender, TRANSFER_TIMEOUT, "the sender");
    for s in &late {
        s.with_data(|d| {
            let mut at = 0;
            let mut n = 0;
            while at + 4 <= d.len() {
                let len = u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]) as usize;
                assert!(
                    (1..=300).contains(&len),
                    "{}: record {n} at {at} has length {len}: not a prefix",
                    s.name()
                );
                if at + 4 + len > d.len() {
                    break;
                }
                let body = &d[at + 4..at + 4 + len];
                for w in body.windows(2) {
                    assert_eq!(w[1], w[0].wrapping_add(1), "{}: record {n}", s.name());
                }
                at += 4 + len;
                n += 1;
            }
            assert!(n > 10, "{}: {n} records", s.name());
        });
    }
    relay.stop();
}
