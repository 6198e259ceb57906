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
);

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
    // Default datagram slots: up to 2044 bytes are relayed whole.
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
