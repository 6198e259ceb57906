//! UDP inputs: fan-out to UDP outputs with datagram boundaries kept, framing onto a stream
//! subscriber, multicast in and out, and IPv6. Each scenario runs with both feature sets.
//!
//! The sender never runs more than a small window ahead of the slowest receiver (see
//! `common::send_windowed`), so on loopback no datagram is lost for want of buffer space: every
//! datagram must arrive, once, in order, byte for byte.
//!
//! The daemon receives datagrams into slots of `datagram_size` bytes (2 KiB by default) and drops
//! larger ones as oversize; scenarios that send datagrams up to the UDP maximum (65507 bytes)
//! raise it with [`JUMBO`].
//!
//! Where the kernel has them (6.0+, 64-bit), the `auto` runs receive by multishot RECVMSG into
//! provided-buffer rings and the `baseline` runs by linked chains of single-shot receives:
//! [`udp_sequence_in_order_in_bursts`] checks which path ran and that bursts arrive in order.

#[macro_use]
mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// Global keys for datagrams up to the UDP maximum (the slot keeps 4 bytes for a length prefix).
const JUMBO: &str = "datagram_size = 64KiB\ndatagram_count = 64\n";

in_both_feature_sets!(
    udp_fan_out_to_four_outputs,
    udp_command_line_channel,
    udp_framed_onto_tcp_subscriber,
    udp_multicast_in_and_out,
    udp_ipv6,
    udp_oversize_datagrams_are_dropped,
    udp_segmented_sends_keep_boundaries,
    udp_sequence_in_order_in_bursts,
    udp_stuck_subscriber_does_not_stall_the_channel,
    udp_receive_buffers_asked_and_granted,
    udp_refused_destination_logs_once_per_episode,
);

/// Without CAP_NET_ADMIN the kernel caps `rcvbuf=` at net.core.rmem_max: the relay starts,
/// and its warning names the sysctl that would grant the size asked for. Needs `capsh` (to drop
/// the capability) and an rmem_max below 64 MiB; otherwise says so and checks nothing.
#[test]
fn udp_receive_buffer_capped_by_rmem_max_names_the_sysctl() {
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let capsh = ["/usr/sbin/capsh", "/sbin/capsh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let (Some(capsh), true) = (capsh, rmem_max > 0 && rmem_max < 64 << 20) else {
        eprintln!("NOTE: skipping: needs capsh and net.core.rmem_max below 64 MiB");
        return;
    };
    let dir = TempDir::new("udp-rmem-max");
    let conf = dir.join("ringrelay.conf");
    let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &conf,
        format!(
            "{}[channel capped]\ninput = udp://{input} rcvbuf=64MiB\noutput = udp://{}\n",
            dir.global_section(),
            out.local_addr().unwrap()
        ),
    )
    .unwrap();
    let script = format!("exec timeout -s TERM 2 {} run -c {}", bin(), conf.display());
    let o = output_within(
        std::process::Command::new(capsh).args(["--drop=cap_net_admin", "--", "-c", &script]),
        "ringrelay run without CAP_NET_ADMIN",
        std::time::Duration::from_secs(10),
    );
    let log = String::from_utf8_lossy(&o.stderr);
    let w = log
        .lines()
        .find(|l| l.contains("receive buffer is"))
        .unwrap_or_else(|| panic!("no receive-buffer warning; stderr:\n{log}"));
    for want in [
        "WARN",
        "channel capped",
        "of the 64MiB asked for",
        "sysctl -w net.core.rmem_max=67108864",
    ] {
        assert!(w.contains(want), "warning lacks '{want}': {w}");
    }
    assert!(
        log.contains("ready"),
        "the relay did not start; stderr:\n{log}"
    );
}

/// `rcvbuf=` on a UDP input: a size the kernel grants starts quietly; one it cannot grant (more
/// than its int holds) starts with one warning that names the channel, the URL and what it got,
/// and the channel relays all the same. (The rmem_max remedy of the message needs a process
/// without CAP_NET_ADMIN to show: the unit tests of net.rs cover the size arithmetic.)
fn udp_receive_buffers_asked_and_granted(features: Features) {
    let dir = TempDir::new("udp-rcvbuf");
    let sinks: Vec<DatagramSink> = (0..2)
        .map(|i| DatagramSink::bind(&format!("udp output {i}"), "127.0.0.1:0".parse().unwrap()))
        .collect();
    let (relay, (fine, huge)) = Relay::start(features, &dir, || {
        let fine = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let huge = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel granted]\ninput = udp://{fine} rcvbuf=64KiB\noutput = udp://{}\n\n\
             [channel toobig]\ninput = udp://{huge} rcvbuf=4GiB\noutput = udp://{}\n",
            dir.global_section(),
            sinks[0].addr,
            sinks[1].addr
        );
        (conf, (fine, huge))
    });
    let log = relay.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("receive buffer is"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, for the 4GiB input:\n{log}");
    let w = warnings[0];
    for want in [
        "WARN",
        "channel toobig",
        &format!("udp://{huge}"),
        "of the 4GiB asked for",
        "Linux grants no more",
    ] {
        assert!(w.contains(want), "warning lacks '{want}': {w}");
    }
    let dgrams = datagrams(5, 200, 1400);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (to, sink) in [(fine, &sinks[0]), (huge, &sinks[1])] {
        send_windowed(&tx, to, &dgrams, || sink.count(), sink.name());
        assert_same_datagrams(sink.name(), &sink.datagrams(), &dgrams);
    }
    relay.stop();
}

/// A TCP subscriber that connects and never reads holds up to its buffer quota of datagrams
/// (`on_slow = drop`); the UDP output beside it must still get every datagram, in order. On
/// the multishot path the stuck subscriber holds buffers of the input's ring, which then runs
/// dry until the ring grows past the subscriber's quota.
fn udp_stuck_subscriber_does_not_stall_the_channel(features: Features) {
    let dir = TempDir::new("udp-stuck");
    let udp_out = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, (input, subs)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel stuck]\ninput = udp://{input}\noutput = tcp-listen://{subs}\noutput = udp://{}\n",
            dir.global_section(),
            udp_out.addr
        );
        (conf, (input, subs))
    });
    // A subscriber with a tiny receive buffer that never reads.
    let stuck = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stuck.set_recv_buffer_size(4096).unwrap();
    stuck.connect(&subs.into()).unwrap();
    let listen_url = format!("tcp-listen://{subs}");
    wait_for(
        "the relay to accept the subscriber",
        TRANSFER_TIMEOUT,
        || {
            relay.signal(nix::sys::signal::Signal::SIGUSR1);
            std::thread::sleep(std::time::Duration::from_millis(50));
            relay
                .log()
                .lines()
                .any(|l| l.contains(&listen_url) && l.contains("clients=1"))
        },
    );
    let dgrams = datagrams(8, 12000, 2000);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_windowed(
        &tx,
        input,
        &dgrams,
        || udp_out.count(),
        "udp beside a stuck subscriber",
    );
    assert_same_datagrams("udp output", &udp_out.datagrams(), &dgrams);
    drop(stuck);
    relay.stop();
}

/// Whether this kernel receives UDP by multishot RECVMSG under `features = auto` (what
/// `ringrelay probe` reports).
fn kernel_has_multishot_udp() -> bool {
    let out = std::process::Command::new(bin())
        .arg("probe")
        .env_remove("RINGRELAY_FEATURES")
        .output()
        .expect("ringrelay probe");
    String::from_utf8_lossy(&out.stdout).contains("udp receive       multishot RECVMSG")
}

/// The value of counter `key` in the last SIGUSR1 counters line of channel `channel`'s input.
fn input_counter(relay: &Relay, channel: &str, key: &str) -> Option<u64> {
    let prefix = format!("counters: channel {channel} input");
    let log = relay.log();
    let line = log.lines().rev().find(|l| l.contains(&prefix))?;
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))?;
    v.parse().ok()
}

/// Waits until the SIGUSR1 counters of `channel`'s input show `key` = `want`.
fn wait_counter(relay: &Relay, channel: &str, key: &str, want: u64) {
    wait_for(
        &format!("channel {channel}: {key}={want}"),
        TRANSFER_TIMEOUT,
        || {
            relay.signal(nix::sys::signal::Signal::SIGUSR1);
            std::thread::sleep(std::time::Duration::from_millis(50));
            input_counter(relay, channel, key) == Some(want)
        },
    );
}

/// Bursts of back-to-back datagrams, each carrying its sequence number, fanned out to three
/// outputs: every output gets every datagram byte for byte and strictly in sequence. The
/// feature set is chosen by the config key (`features = baseline`), not the environment, and
/// the start-up line must name the receive path it selects: multishot RECVMSG where the
/// kernel has it, the linked single-shot chains under baseline. Bursts of 200 datagrams are
/// well beyond one receive chain (16) and the 16-datagram window of the other scenarios, so
/// reordering between chains or between ring buffers would show here.
fn udp_sequence_in_order_in_bursts(features: Features) {
    let dir = TempDir::new("udp-order");
    let sinks: Vec<DatagramSink> = (0..3)
        .map(|i| DatagramSink::bind(&format!("udp output {i}"), "127.0.0.1:0".parse().unwrap()))
        .collect();
    let feature_key = match features {
        Features::Auto => "features = auto\n",
        Features::Baseline => "features = baseline\n",
    };
    // Started with the environment cleared: the config key alone selects the feature set.
    let (relay, input) = Relay::start(Features::Auto, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let mut conf = dir
            .global_section()
            .replace("[global]\n", &format!("[global]\n{feature_key}"));
        conf.push_str(&format!("[channel order]\ninput = udp://{input}\n"));
        for s in &sinks {
            conf.push_str(&format!("output = udp://{}\n", s.addr));
        }
        (conf, input)
    });
    let multishot = features == Features::Auto && kernel_has_multishot_udp();
    let want = format!(
        "multishot udp receive {}",
        if multishot { "on" } else { "off" }
    );
    assert!(
        relay.log().contains(&want),
        "the start-up line should say {want:?}:\n{}",
        relay.log()
    );

    const BURST: usize = 200;
    const BURSTS: usize = 25;
    let mut dgrams = Vec::with_capacity(BURST * BURSTS);
    for seq in 0..(BURST * BURSTS) as u64 {
        // 8-byte sequence number, then 0..1000 bytes of a pattern seeded by it.
        let mut d = seq.to_be_bytes().to_vec();
        d.extend(pattern(seq, (seq as usize * 7919) % 1000));
        dgrams.push(d);
    }
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (b, burst) in dgrams.chunks(BURST).enumerate() {
        for d in burst {
            tx.send_to(d, input).unwrap();
        }
        let want = (b + 1) * BURST;
        wait_for(
            &format!("every output to get the {want} datagrams sent so far"),
            TRANSFER_TIMEOUT,
            || sinks.iter().all(|s| s.count() >= want),
        );
    }
    for s in &sinks {
        let got = s.datagrams();
        let seqs: Vec<u64> = got
            .iter()
            .map(|d| u64::from_be_bytes(d[..8].try_into().unwrap()))
            .collect();
        if let Some(i) = (0..seqs.len()).find(|&i| seqs[i] != i as u64) {
            panic!(
                "{}: datagram {i} carries sequence number {} (out of order or lost); around it: {:?}",
                s.name(),
                seqs[i],
                &seqs[i.saturating_sub(3)..(i + 4).min(seqs.len())]
            );
        }
        assert_same_datagrams(s.name(), &got, &dgrams);
    }
    wait_counter(&relay, "order", "datagrams", dgrams.len() as u64);
    assert_eq!(input_counter(&relay, "order", "malformed"), Some(0));
    if !multishot {
        assert_eq!(input_counter(&relay, "order", "rearms"), Some(0));
    }
    relay.stop();
}

/// One UDP input, four UDP outputs: each output gets every datagram, in order, unchanged,
/// including one of the largest size UDP allows.
fn udp_fan_out_to_four_outputs(features: Features) {
    let dir = TempDir::new("udp-fanout");
    let sinks: Vec<DatagramSink> = (0..4)
        .map(|i| DatagramSink::bind(&format!("udp output {i}"), "127.0.0.1:0".parse().unwrap()))
        .collect();
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let mut conf = dir.global_section() + JUMBO;
        conf.push_str(&format!("[channel fanout]\ninput = udp://{input}\n"));
        for s in &sinks {
            conf.push_str(&format!("output = udp://{}\n", s.addr));
        }
        (conf, input)
    });

    let dgrams = datagrams(1, 3000, 65507);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_windowed(
        &tx,
        input,
        &dgrams,
        || sinks.iter().map(|s| s.count()).min().unwrap(),
        "udp fan-out",
    );
    for s in &sinks {
        assert_same_datagrams(s.name(), &s.datagrams(), &dgrams);
    }
    relay.stop();
}

/// `ringrelay run --input URL --output URL --output URL` runs one channel without a config file.
fn udp_command_line_channel(features: Features) {
    let sinks: Vec<DatagramSink> = (0..2)
        .map(|i| DatagramSink::bind(&format!("udp output {i}"), "127.0.0.1:0".parse().unwrap()))
        .collect();
    let (relay, input) = Relay::start_args(features, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let mut args = vec![
            "run".to_string(),
            "--input".to_string(),
            format!("udp://{input}"),
        ];
        for s in &sinks {
            args.push("--output".to_string());
            args.push(format!("udp://{}", s.addr));
        }
        (args, input)
    });
    // Default datagram slots: up to 2032 bytes are relayed whole.
    let dgrams = datagrams(2, 500, 2000);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_windowed(
        &tx,
        input,
        &dgrams,
        || sinks.iter().map(|s| s.count()).min().unwrap(),
        "udp from the command line",
    );
    for s in &sinks {
        assert_same_datagrams(s.name(), &s.datagrams(), &dgrams);
    }
    relay.stop();
}

/// `framing = u32be`: a TCP subscriber of a UDP channel reads each datagram as a big-endian
/// u32 length followed by the datagram, and the UDP output beside it still gets plain datagrams.
fn udp_framed_onto_tcp_subscriber(features: Features) {
    let dir = TempDir::new("udp-framing");
    let udp_out = DatagramSink::bind("udp output", "127.0.0.1:0".parse().unwrap());
    let (relay, (input, subs_addr)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}{JUMBO}[channel framed]\ninput = udp://{input}\nframing = u32be\noutput = tcp-listen://{subs}\noutput = udp://{}\n",
            dir.global_section(),
            udp_out.addr
        );
        (conf, (input, subs))
    });
    let subs: Vec<StreamSink> = (0..2)
        .map(|i| StreamSink::tcp(&format!("framed subscriber {i}"), subs_addr))
        .collect();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();

    // Ping datagrams until both subscribers are registered (each holds at least one record).
    let mut pings = 0;
    wait_for(
        "the subscribers to see a ping datagram",
        TRANSFER_TIMEOUT,
        || {
            tx.send_to(PING_DATAGRAM, input).unwrap();
            pings += 1;
            wait_until(std::time::Duration::from_millis(25), || {
                subs.iter()
                    .all(|s| s.with_data(|d| !split_frames(d).0.is_empty()))
            })
        },
    );
    wait_for("the udp output to get the pings", TRANSFER_TIMEOUT, || {
        udp_out.count() >= pings
    });

    let dgrams = datagrams(3, 2000, 65507);
    let delivered = || {
        let framed = subs
            .iter()
            .map(|s| s.with_data(|d| framed_after_pings(d).len()))
            .min()
            .unwrap();
        framed.min(udp_out.count() - pings)
    };
    send_windowed(&tx, input, &dgrams, delivered, "udp framed onto tcp");
    for s in &subs {
        s.with_data(|d| {
            let (_, partial) = split_frames(d);
            assert_eq!(partial, 0, "{}: a partial record at the end", s.name());
            assert_same_datagrams(s.name(), &framed_after_pings(d), &dgrams);
        });
    }
    let plain = udp_out.datagrams();
    assert!(plain[..pings].iter().all(|d| d == PING_DATAGRAM));
    assert_same_datagrams("udp output beside the framed one", &plain[pings..], &dgrams);
    relay.stop();
}

/// A channel that joins a multicast group on loopback and sends to another group (and to a
/// unicast destination): receivers of both get every datagram.
fn udp_multicast_in_and_out(features: Features) {
    let dir = TempDir::new("udp-multicast");
    let iface = Ipv4Addr::LOCALHOST;
    // Groups unique to this process and call, so parallel runs never hear each other.
    let n = (std::process::id() % 200) as u8;
    let in_group = Ipv4Addr::new(239, 255, n, 11 + features as u8);
    let out_group = Ipv4Addr::new(239, 255, n, 21 + features as u8);
    let Some(mcast_out) = DatagramSink::multicast("multicast output", out_group, iface) else {
        eprintln!("NOTE: skipping the multicast test: this kernel does not join groups on lo");
        return;
    };
    let unicast_out = DatagramSink::bind("unicast output", "127.0.0.1:0".parse().unwrap());
    let out_port = mcast_out.addr.port();
    let (relay, in_port) = Relay::start(features, &dir, || {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let in_port = free_udp_port(any);
        let conf = format!(
            "{}{JUMBO}[channel mcast]\ninput = udp://0.0.0.0:{in_port} group={in_group} iface=127.0.0.1\noutput = udp://{out_group}:{out_port} ttl=1 iface=127.0.0.1\noutput = udp://{}\n",
            dir.global_section(),
            unicast_out.addr
        );
        (conf, in_port)
    });

    let tx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    tx.set_multicast_if_v4(&iface).unwrap();
    tx.set_multicast_loop_v4(true).unwrap();
    tx.bind(&SocketAddr::new(IpAddr::V4(iface), 0).into())
        .unwrap();
    let tx: UdpSocket = tx.into();
    let dgrams = datagrams(4, 1000, 8192);
    send_windowed(
        &tx,
        SocketAddr::new(IpAddr::V4(in_group), in_port),
        &dgrams,
        || mcast_out.count().min(unicast_out.count()),
        "multicast",
    );
    assert_same_datagrams("multicast output", &mcast_out.datagrams(), &dgrams);
    assert_same_datagrams("unicast output", &unicast_out.datagrams(), &dgrams);
    relay.stop();
}

/// IPv6 everywhere: a UDP input on [::1] to UDP outputs on [::1] and a framed TCP subscriber.
fn udp_ipv6(features: Features) {
    if !ipv6_available() {
        eprintln!("NOTE: skipping the IPv6 test: [::1] cannot be bound here");
        return;
    }
    let dir = TempDir::new("udp-ipv6");
    let sinks: Vec<DatagramSink> = (0..2)
        .map(|i| DatagramSink::bind(&format!("udp6 output {i}"), "[::1]:0".parse().unwrap()))
        .collect();
    let (relay, (input, subs_addr)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST6, free_udp_port(LOCALHOST6));
        let subs = SocketAddr::new(LOCALHOST6, free_tcp_port(LOCALHOST6));
        let mut conf = format!(
            "{}{JUMBO}[channel six]\ninput = udp://{input}\nframing = u32be\noutput = tcp-listen://{subs}\n",
            dir.global_section()
        );
        for s in &sinks {
            conf.push_str(&format!("output = udp://{}\n", s.addr));
        }
        (conf, (input, subs))
    });
    let sub = StreamSink::tcp("tcp6 subscriber", subs_addr);
    let tx = UdpSocket::bind("[::1]:0").unwrap();
    let mut pings = 0;
    wait_for(
        "the subscriber to see a ping datagram",
        TRANSFER_TIMEOUT,
        || {
            tx.send_to(PING_DATAGRAM, input).unwrap();
            pings += 1;
            wait_until(std::time::Duration::from_millis(25), || {
                sub.with_data(|d| !split_frames(d).0.is_empty())
            })
        },
    );
    wait_for("the udp outputs to get the pings", TRANSFER_TIMEOUT, || {
        sinks.iter().all(|s| s.count() >= pings)
    });
    let dgrams = datagrams(5, 1000, 65507);
    let delivered = || {
        let udp = sinks.iter().map(|s| s.count() - pings).min().unwrap();
        udp.min(sub.with_data(|d| framed_after_pings(d).len()))
    };
    send_windowed(&tx, input, &dgrams, delivered, "udp over ipv6");
    for s in &sinks {
        assert_same_datagrams(s.name(), &s.datagrams()[pings..], &dgrams);
    }
    sub.with_data(|d| assert_same_datagrams(sub.name(), &framed_after_pings(d), &dgrams));
    relay.stop();
}

/// A provided-buffer ring of only 4 slots (`datagram_count = 8`: a ring takes at most half
/// the free slots) runs dry in every burst: the multishot receive ends with -ENOBUFS, is armed
/// again once outputs give buffers back, and not a datagram is lost or reordered. Multishot
/// only (the chain path has no ring); skipped where the kernel lacks it.
#[test]
fn udp_small_ring_runs_dry_and_rearms_in_order() {
    if !kernel_has_multishot_udp() {
        eprintln!("NOTE: skipping: this kernel has no multishot UDP receive");
        return;
    }
    let dir = TempDir::new("udp-dry-ring");
    let sinks: Vec<DatagramSink> = (0..2)
        .map(|i| DatagramSink::bind(&format!("udp output {i}"), "127.0.0.1:0".parse().unwrap()))
        .collect();
    let (relay, input) = Relay::start(Features::Auto, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let mut conf = dir.global_section() + "datagram_count = 8\n";
        conf.push_str(&format!("[channel dry]\ninput = udp://{input}\n"));
        for s in &sinks {
            conf.push_str(&format!("output = udp://{}\n", s.addr));
        }
        (conf, input)
    });
    let dgrams: Vec<Vec<u8>> = (0..4000u64)
        .map(|seq| {
            let mut d = seq.to_be_bytes().to_vec();
            d.extend(pattern(seq, (seq as usize * 31) % 1500));
            d
        })
        .collect();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (b, burst) in dgrams.chunks(200).enumerate() {
        for d in burst {
            tx.send_to(d, input).unwrap();
        }
        let want = (b + 1) * 200;
        wait_for(
            &format!("every output to get the {want} datagrams sent so far"),
            TRANSFER_TIMEOUT,
            || sinks.iter().all(|s| s.count() >= want),
        );
    }
    for s in &sinks {
        assert_same_datagrams(s.name(), &s.datagrams(), &dgrams);
    }
    wait_counter(&relay, "dry", "datagrams", dgrams.len() as u64);
    let rearms = input_counter(&relay, "dry", "rearms").unwrap();
    assert!(rearms > 0, "a 4-slot ring should have run dry");
    relay.stop();
}

/// With the default 2 KiB slots, a 4000-byte datagram is oversize: it is dropped (and counted),
/// never relayed cut short, and the datagrams around it flow on unchanged.
fn udp_oversize_datagrams_are_dropped(features: Features) {
    let dir = TempDir::new("udp-oversize");
    let sinks: Vec<DatagramSink> = (0..2)
        .map(|i| DatagramSink::bind(&format!("udp output {i}"), "127.0.0.1:0".parse().unwrap()))
        .collect();
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let mut conf = format!(
            "{}[channel small]\ninput = udp://{input}\n",
            dir.global_section()
        );
        for s in &sinks {
            conf.push_str(&format!("output = udp://{}\n", s.addr));
        }
        (conf, input)
    });
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let normal = datagrams(6, 300, 1000);
    let oversize = pattern(7, 4000);
    for (g, group) in normal.chunks(10).enumerate() {
        for d in group {
            tx.send_to(d, input).unwrap();
        }
        tx.send_to(&oversize, input).unwrap();
        let want = (g * 10 + group.len()).min(normal.len());
        wait_for(
            &format!("the outputs to get the {want} normal datagrams sent so far"),
            TRANSFER_TIMEOUT,
            || sinks.iter().all(|s| s.count() >= want),
        );
    }
    // A stray late datagram (a relayed piece of an oversize one) would show up here.
    tx.send_to(b"LAST!", input).unwrap();
    wait_for("the last datagram", TRANSFER_TIMEOUT, || {
        sinks.iter().all(|s| s.count() > normal.len())
    });
    for s in &sinks {
        let got = s.datagrams();
        assert_same_datagrams(s.name(), &got[..got.len() - 1], &normal);
        assert_eq!(got.last().unwrap(), b"LAST!", "{}: last datagram", s.name());
    }
    // Every oversize datagram was counted as malformed, on either receive path.
    wait_counter(
        &relay,
        "small",
        "malformed",
        normal.chunks(10).count() as u64,
    );
    relay.stop();
}

/// Runs of equal-sized datagrams, each run ending in a shorter one now and then: what a
/// segmented send (UDP_SEGMENT) batches. Every datagram must come out with its own boundary,
/// on outputs with segmentation (the default) and without (`gso=off`).
fn udp_segmented_sends_keep_boundaries(features: Features) {
    let dir = TempDir::new("udp-gso");
    let sinks: Vec<DatagramSink> = (0..3)
        .map(|i| DatagramSink::bind(&format!("udp output {i}"), "127.0.0.1:0".parse().unwrap()))
        .collect();
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let mut conf = dir.global_section();
        conf.push_str(&format!("[channel runs]\ninput = udp://{input}\n"));
        conf.push_str(&format!("output = udp://{}\n", sinks[0].addr));
        conf.push_str(&format!("output = udp://{} gso=on\n", sinks[1].addr));
        conf.push_str(&format!("output = udp://{} gso=off\n", sinks[2].addr));
        (conf, input)
    });
    let mut dgrams = Vec::new();
    let sizes = pattern(7, 400);
    let mut k = 0;
    while dgrams.len() < 3000 {
        // A run of 1..=40 datagrams of one size in 8..=1400, then maybe a shorter tail.
        let run = 1 + usize::from(sizes[k % 400]) % 40;
        let size = 8 + (usize::from(sizes[(k + 1) % 400]) * 7) % 1393;
        k += 2;
        for _ in 0..run {
            dgrams.push(size);
        }
        if k % 3 == 0 {
            dgrams.push(4 + size / 2);
        }
    }
    let dgrams: Vec<Vec<u8>> = dgrams
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut d = pattern(i as u64, len);
            d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            d
        })
        .collect();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_windowed(
        &tx,
        input,
        &dgrams,
        || sinks.iter().map(|s| s.count()).min().unwrap(),
        "udp segmented runs",
    );
    for s in &sinks {
        assert_same_datagrams(s.name(), &s.datagrams(), &dgrams);
    }
    relay.stop();
}

/// A UDP destination with nothing listening refuses every other datagram (the ICMP error
/// comes back after the send it answers): the relay logs the fault once and keeps dropping
/// (counted) without logging a recovery and a new fault per datagram; once something listens
/// again and a second passes without a refusal, one recovery line.
fn udp_refused_destination_logs_once_per_episode(features: Features) {
    let dir = TempDir::new("udp-refused");
    // A port nobody listens on: taken, noted, released.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dest = closed.local_addr().unwrap();
    drop(closed);
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = dir.global_section()
            + &format!("[channel refused]\ninput = udp://{input}\noutput = udp://{dest}\n");
        (conf, input)
    });
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |n: usize| {
        for i in 0..n {
            tx.send_to(&(i as u64).to_be_bytes(), input).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    send(200);
    wait_for_log(&relay, "dropping until it recovers");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let faults = lines_with(&relay, "dropping until it recovers").len();
    let recoveries = lines_with(&relay, "recovered").len();
    assert_eq!(
        faults,
        1,
        "one fault line for the episode:\n{}",
        relay.log()
    );
    assert_eq!(recoveries, 0, "no recovery while refused:\n{}", relay.log());
    // Something listens again: after a second of sends without a refusal, one recovery.
    let sink = DatagramSink::bind("udp destination", dest);
    send(700);
    wait_for_log(&relay, "recovered");
    assert!(sink.count() > 0);
    assert_eq!(lines_with(&relay, "recovered").len(), 1, "{}", relay.log());
    assert_eq!(
        lines_with(&relay, "dropping until it recovers").len(),
        1,
        "{}",
        relay.log()
    );
    relay.stop();
}
