//! Stream inputs: a TCP producer fanned out to subscribers and a file, a subscriber that stops
//! reading, a producer that restarts, a flush on SIGTERM, IPv6 and Unix sockets. Each scenario
//! runs with both feature sets.
//!
//! Subscribers only get the live stream from the moment the relay has accepted them, and a test
//! cannot see that moment from outside. So the producer first sends single `PING` bytes until
//! every subscriber has received one (`common::ping_stream`): from then on each one must receive
//! every byte. A subscriber's data are some pings followed by the payload, whose first byte is
//! never a ping.

#[macro_use]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::time::Duration;

in_both_feature_sets!(
    tcp_producer_to_three_subscribers_and_a_file,
    tcp_slow_subscriber_is_disconnected,
    tcp_producer_reconnects,
    sigterm_flushes_a_file_output,
    tcp_ipv6,
    unix_sockets,
    zerocopy_subscribers_and_collector_get_every_byte,
    zerocopy_slow_subscriber_is_disconnected,
);

/// The start-up line says whether zero-copy sends are on: with the baseline set they are not
/// (and the relay warns for each output that asked), otherwise on for `n` outputs.
fn assert_zerocopy(relay: &Relay, features: Features, n: usize) {
    let log = relay.log();
    let want = match features {
        Features::Baseline => "zero-copy send unavailable".to_string(),
        _ => format!(
            "zero-copy send on ({n} output{})",
            if n == 1 { "" } else { "s" }
        ),
    };
    assert!(log.contains(&want), "start-up line lacks '{want}':\n{log}");
    if features == Features::Baseline {
        assert_eq!(
            log.matches("zerocopy=on, but").count(),
            n,
            "one warning per zerocopy=on output:\n{log}"
        );
    }
}

/// `zerocopy=on` on a subscriber output and a collector: 32 MiB leave by IORING_OP_SEND_ZC from
/// the pool buffers themselves, each buffer held until the kernel's notification; both
/// subscribers and the collector get every byte, and SIGTERM still exits 0 (no notification
/// left owed).
fn zerocopy_subscribers_and_collector_get_every_byte(features: Features) {
    let dir = TempDir::new("tcp-zerocopy");
    let collector = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let caddr = collector.addr;
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel zc]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} zerocopy=on max_backlog=8MiB\noutput = tcp://{caddr} zerocopy=on\n",
            dir.global_section()
        );
        (conf, StreamChannel { input, subs })
    });
    assert_zerocopy(&relay, features, 2);
    let subs: Vec<StreamSink> = (0..2)
        .map(|i| StreamSink::tcp(&format!("subscriber {i}"), ch.subs))
        .collect();
    wait_for("the relay to dial the collector", TRANSFER_TIMEOUT, || {
        !collector.connections().is_empty()
    });
    let mut producer = connect_tcp(ch.input);
    let refs: Vec<&StreamSink> = subs.iter().collect();
    let pings = ping_stream(&mut producer, &refs);
    let payload = pattern(12, 32 << 20);
    for s in &subs {
        s.reserve(payload.len() + (1 << 20));
    }
    // A 1 MiB window: a zero-copy send carries one chunk, so a subscriber drains more slowly
    // than by gathered copy, and a window near its 64-buffer quota would disconnect it.
    write_windowed(
        &mut producer,
        &payload,
        1 << 20,
        || min_after_pings(&refs),
        "zero-copy fan-out",
    );
    for s in &subs {
        expect_after_pings(s, &payload, TRANSFER_TIMEOUT);
    }
    wait_for("the collector to get the stream", TRANSFER_TIMEOUT, || {
        collector.total_len() >= pings + payload.len()
    });
    let got = collector.concatenated();
    assert!(
        got[..pings].iter().all(|&b| b == PING),
        "collector starts with the pings"
    );
    assert_same_bytes("collector", &got[pings..], &payload);
    // The counters say the bytes left by zero-copy send (and by copy under the baseline set).
    let urls = [
        format!("tcp-listen://{}", ch.subs),
        format!("tcp://{caddr}"),
    ];
    let zc_lines = || {
        let log = relay.log();
        urls.iter()
            .filter(|u| {
                log.lines()
                    .any(|l| l.contains(&format!("output {u} ")) && l.contains(" zerocopy="))
            })
            .count()
    };
    if features == Features::Auto {
        wait_for("counters with zero-copy sends", TRANSFER_TIMEOUT, || {
            relay.signal(nix::sys::signal::Signal::SIGUSR1);
            std::thread::sleep(Duration::from_millis(50));
            zc_lines() == urls.len()
        });
    } else {
        relay.signal(nix::sys::signal::Signal::SIGUSR1);
        wait_for("counters", TRANSFER_TIMEOUT, || {
            relay.log().contains("counters: channel zc output")
        });
        assert_eq!(
            zc_lines(),
            0,
            "zero-copy sends under the baseline set:\n{}",
            relay.log()
        );
    }
    drop(producer);
    relay.stop();
}

/// A subscriber that stops reading on a `zerocopy=on` output is disconnected while zero-copy
/// sends to it may still be owed their notifications; the fast ones get every byte, and the
/// relay then exits 0 on SIGTERM.
fn zerocopy_slow_subscriber_is_disconnected(features: Features) {
    slow_subscriber_is_disconnected(features, " zerocopy=on");
}

/// A channel with a `tcp-listen` input and the addresses the test needs.
struct StreamChannel {
    input: SocketAddr,
    subs: SocketAddr,
}

/// One TCP producer, three TCP subscribers and a file: all four get every byte of 16 MiB. One
/// subscriber half-closes as soon as it connects (as `nc HOST PORT < /dev/null` does): with
/// `on_fin=keep` a FIN from a subscriber is not a hang-up, it still gets everything. (Without
/// it, a FIN releases the subscriber: tests/relay_release.rs.)
fn tcp_producer_to_three_subscribers_and_a_file(features: Features) {
    let dir = TempDir::new("tcp-fanout");
    let file = dir.join("fanout.raw");
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel fanout]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} on_fin=keep\noutput = file://{}\n",
            dir.global_section(),
            file.display()
        );
        (conf, StreamChannel { input, subs })
    });
    let subs: Vec<StreamSink> = (0..3)
        .map(|i| StreamSink::tcp(&format!("subscriber {i}"), ch.subs))
        .collect();
    subs[2]
        .tcp_handle()
        .unwrap()
        .shutdown(Shutdown::Write)
        .expect("half-close");
    let mut producer = connect_tcp(ch.input);
    let refs: Vec<&StreamSink> = subs.iter().collect();
    let pings = ping_stream(&mut producer, &refs);

    let payload = pattern(10, 16 << 20);
    for s in &subs {
        s.reserve(payload.len() + (1 << 20));
    }
    write_windowed(
        &mut producer,
        &payload,
        4 << 20,
        || min_after_pings(&refs),
        "tcp fan-out",
    );
    for s in &subs {
        expect_after_pings(s, &payload, TRANSFER_TIMEOUT);
    }

    // The file holds the whole stream from the first ping on.
    let want_len = (pings + payload.len()) as u64;
    let file_len = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    wait_for(
        "the file output to hold the stream",
        TRANSFER_TIMEOUT,
        || file_len() >= want_len,
    );
    let got = std::fs::read(&file).unwrap();
    assert!(
        got[..pings].iter().all(|&b| b == PING),
        "file starts with the pings"
    );
    assert_same_bytes("file output", &got[pings..], &payload);
    drop(producer);
    relay.stop();
}

/// A subscriber that stops reading is disconnected once it is `max_backlog` behind, while the
/// two that keep reading get every byte of 32 MiB. What the stalled one did receive is a prefix
/// of the stream.
///
/// The stalled subscriber fixes a small receive buffer, so the most it can hold unread is that
/// buffer, the relay's socket send buffer (at most net.core.wmem_max / tcp_wmem, a few MiB) and
/// the 256 KiB backlog: well under 32 MiB. A relay that never disconnects it would have to
/// buffer the rest, and the stalled subscriber, once it reads again, would get every byte and
/// no end of stream: both are failures here.
fn tcp_slow_subscriber_is_disconnected(features: Features) {
    slow_subscriber_is_disconnected(features, "");
}

fn slow_subscriber_is_disconnected(features: Features, opts: &str) {
    let dir = TempDir::new("tcp-slow");
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel slow]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} max_backlog=256KiB on_slow=disconnect{opts}\n",
            dir.global_section()
        );
        (conf, StreamChannel { input, subs })
    });
    if !opts.is_empty() {
        assert_zerocopy(&relay, features, 1);
    }
    let fast: Vec<StreamSink> = (0..2)
        .map(|i| StreamSink::tcp(&format!("fast subscriber {i}"), ch.subs))
        .collect();
    // The stalled subscriber: a small receive buffer, read only up to its first ping for now.
    let stalled = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(16 * 1024).unwrap();
        s.connect_timeout(&ch.subs.into(), Duration::from_secs(5))
            .expect("connect stalled subscriber");
        let s: std::net::TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        s
    };
    let mut stalled_data = Vec::new();
    let mut producer = connect_tcp(ch.input);
    let refs: Vec<&StreamSink> = fast.iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut pings = 0;
    // Ping until the two fast ones and the stalled one have each seen a ping.
    loop {
        producer.write_all(&[PING]).unwrap();
        pings += 1;
        let mut buf = [0u8; 64];
        if let Ok(n) = (&stalled).read(&mut buf) {
            stalled_data.extend_from_slice(&buf[..n]);
        }
        if !stalled_data.is_empty() && refs.iter().all(|s| !s.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "subscribers saw no ping after {pings} pings"
        );
    }

    let payload = pattern(11, 32 << 20);
    for s in &fast {
        s.reserve(payload.len() + (1 << 20));
    }
    // The fast ones are never more than 128 KiB (half of max_backlog) behind the producer, so
    // the relay can never have more than that queued for them, however small their socket
    // buffers still are; the stalled one soon falls far behind.
    write_windowed(
        &mut producer,
        &payload,
        128 << 10,
        || min_after_pings(&refs),
        "tcp with a stalled subscriber",
    );
    for s in &fast {
        expect_after_pings(s, &payload, TRANSFER_TIMEOUT);
    }

    // Now read the stalled subscriber: it must end (EOF or reset) short of the whole stream.
    stalled
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut ended = None;
    let ok = wait_until(TRANSFER_TIMEOUT, || match (&stalled).read(&mut buf) {
        Ok(0) => {
            ended = Some("end of stream".to_string());
            true
        }
        Ok(n) => {
            stalled_data.extend_from_slice(&buf[..n]);
            false
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            false
        }
        Err(e) => {
            ended = Some(e.to_string());
            true
        }
    });
    let got = strip_pings(&stalled_data);
    assert!(
        ok,
        "the stalled subscriber was never disconnected: it read {} of {} bytes and its connection is still open",
        got.len(),
        payload.len()
    );
    assert!(
        got.len() < payload.len(),
        "the stalled subscriber got every byte ({}) before its connection ended ({ended:?}): it was not disconnected",
        got.len()
    );
    assert_same_bytes(
        "what the stalled subscriber received (a prefix of the stream)",
        got,
        &payload[..got.len()],
    );
    relay.stop();
}

/// A `tcp://` input dials its producer; the producer goes away and comes back on the same port.
/// The relay redials, and subscribers stay connected and see both streams back to back.
fn tcp_producer_reconnects(features: Features) {
    let dir = TempDir::new("tcp-producer-reconnect");
    // The producer listens before the relay starts; its port is ours, not the relay's.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let producer_addr = listener.local_addr().unwrap();
    let (relay, subs_addr) = Relay::start(features, &dir, || {
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel dialer]\ninput = tcp://{producer_addr}\noutput = tcp-listen://{subs}\n",
            dir.global_section()
        );
        (conf, subs)
    });
    let subs: Vec<StreamSink> = (0..2)
        .map(|i| StreamSink::tcp(&format!("subscriber {i}"), subs_addr))
        .collect();
    let accept = |l: &TcpListener| {
        l.set_nonblocking(true).unwrap();
        let mut conn = None;
        wait_for("the relay to dial the producer", TRANSFER_TIMEOUT, || {
            if let Ok((s, _)) = l.accept() {
                conn = Some(s);
            }
            conn.is_some()
        });
        let s = conn.unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_nodelay(true).unwrap();
        s
    };

    // First life of the producer.
    let mut conn = accept(&listener);
    let refs: Vec<&StreamSink> = subs.iter().collect();
    ping_stream(&mut conn, &refs);
    let first = pattern(12, 2 << 20);
    conn.write_all(&first).unwrap();
    for s in &subs {
        expect_after_pings(s, &first, TRANSFER_TIMEOUT);
    }
    // The producer dies: connection and listener gone, so the relay's redials are refused a while.
    conn.shutdown(Shutdown::Both).ok();
    drop(conn);
    drop(listener);
    std::thread::sleep(Duration::from_millis(500));

    // Second life on the same port.
    let l2 = {
        let mut l = None;
        wait_for(
            "the producer's port to be free again",
            Duration::from_secs(10),
            || {
                l = TcpListener::bind(producer_addr).ok();
                l.is_some()
            },
        );
        l.unwrap()
    };
    let mut conn = accept(&l2);
    let second = pattern(13, 2 << 20);
    conn.write_all(&second).unwrap();
    let both: Vec<u8> = first.iter().chain(second.iter()).copied().collect();
    for s in &subs {
        expect_after_pings(s, &both, TRANSFER_TIMEOUT);
        assert_eq!(s.end(), None, "{}: disconnected", s.name());
    }
    relay.stop();
}

/// SIGTERM right after a burst: the daemon flushes what it has read to its file output, then
/// exits 0.
///
/// What is guaranteed is that bytes the relay has read from its input reach the file; bytes still
/// in the kernel's socket buffer when SIGTERM arrives may be left unread ("stop reading"). A
/// subscriber beside the file is the witness that the relay has read the whole burst: SIGTERM goes
/// out the moment the subscriber has it all, while the file output may still be behind.
fn sigterm_flushes_a_file_output(features: Features) {
    let dir = TempDir::new("sigterm-flush");
    let file = dir.join("flush.raw");
    let (mut relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel flush]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs}\noutput = file://{}\n",
            dir.global_section(),
            file.display()
        );
        (conf, StreamChannel { input, subs })
    });
    let witness = StreamSink::tcp("witness subscriber", ch.subs);
    let mut producer = connect_tcp(ch.input);
    let pings = ping_stream(&mut producer, &[&witness]);
    let payload = pattern(14, 24 << 20);
    write_windowed(
        &mut producer,
        &payload,
        4 << 20,
        || min_after_pings(&[&witness]),
        "burst before SIGTERM",
    );
    // Poll tightly: SIGTERM as soon as the witness holds the whole burst.
    let want = pings + payload.len();
    wait_for("the witness to receive the burst", TRANSFER_TIMEOUT, || {
        witness.len() >= want
    });
    relay.terminate();
    let status = relay.wait_exit(EXIT_TIMEOUT);
    match status {
        Some(s) if s.code() == Some(0) => {}
        Some(s) => panic!("exit {s} after SIGTERM; stderr:\n{}", relay.log()),
        None => panic!(
            "no exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{}",
            relay.log()
        ),
    }
    let got = std::fs::read(&file).expect("read the file output");
    assert!(
        got.len() >= pings && got[..pings].iter().all(|&b| b == PING),
        "the file starts with the pings"
    );
    assert_same_bytes("file output after SIGTERM", &got[pings..], &payload);
    assert_same_bytes("witness subscriber", strip_pings(&witness.data()), &payload);
}

/// IPv6 on the stream side: a producer on [::1], two subscribers on [::1] and a file.
fn tcp_ipv6(features: Features) {
    if !ipv6_available() {
        eprintln!("NOTE: skipping the IPv6 test: [::1] cannot be bound here");
        return;
    }
    let dir = TempDir::new("tcp-ipv6");
    let file = dir.join("six.raw");
    let (relay, ch) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST6, free_tcp_port(LOCALHOST6));
        let subs = SocketAddr::new(LOCALHOST6, free_tcp_port(LOCALHOST6));
        let conf = format!(
            "{}[channel six]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} allow=::1/128\noutput = file://{}\n",
            dir.global_section(),
            file.display()
        );
        (conf, StreamChannel { input, subs })
    });
    let subs: Vec<StreamSink> = (0..2)
        .map(|i| StreamSink::tcp(&format!("ipv6 subscriber {i}"), ch.subs))
        .collect();
    let mut producer = connect_tcp(ch.input);
    let refs: Vec<&StreamSink> = subs.iter().collect();
    let pings = ping_stream(&mut producer, &refs);
    let payload = pattern(15, 4 << 20);
    producer.write_all(&payload).unwrap();
    for s in &subs {
        expect_after_pings(s, &payload, TRANSFER_TIMEOUT);
    }
    let want_len = (pings + payload.len()) as u64;
    wait_for(
        "the file output to hold the stream",
        TRANSFER_TIMEOUT,
        || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) >= want_len,
    );
    let got = std::fs::read(&file).unwrap();
    assert_same_bytes("file output", &got[pings..], &payload);
    relay.stop();
}

/// Unix sockets end to end: a producer on a `unix-listen` input, subscribers on a `unix-listen`
/// output, and a `tcp-listen` subscriber beside them.
fn unix_sockets(features: Features) {
    let dir = TempDir::new("unix");
    let in_path = dir.join("in.sock");
    let out_path = dir.join("out.sock");
    let (relay, tcp_subs) = Relay::start(features, &dir, || {
        let _ = std::fs::remove_file(&in_path);
        let _ = std::fs::remove_file(&out_path);
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel local]\ninput = unix-listen://{}\noutput = unix-listen://{}\noutput = tcp-listen://{subs}\n",
            dir.global_section(),
            in_path.display(),
            out_path.display()
        );
        (conf, subs)
    });
    let subs = [
        StreamSink::unix("unix subscriber 0", &out_path),
        StreamSink::unix("unix subscriber 1", &out_path),
        StreamSink::tcp("tcp subscriber", tcp_subs),
    ];
    let mut producer = UnixStream::connect(&in_path).expect("connect unix producer");
    producer.set_write_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
    let refs: Vec<&StreamSink> = subs.iter().collect();
    ping_stream(&mut producer, &refs);
    let payload = pattern(16, 8 << 20);
    // A 1 MiB window, not 4 MiB: besides max_backlog, a subscriber may hold only its share of
    // the pool (buffer_count / 4 = 64 buffers here, see `buffer_quota`), and a Unix stream read
    // often fills a 64 KiB buffer only partly, so 4 MiB outstanding overran those 64 buffers
    // and the daemon disconnected the unix subscribers as too slow (about 1 run in 12).
    write_windowed(
        &mut producer,
        &payload,
        1 << 20,
        || min_after_pings(&refs),
        "unix producer",
    );
    for s in &subs {
        expect_after_pings(s, &payload, TRANSFER_TIMEOUT);
    }
    relay.stop();
}
