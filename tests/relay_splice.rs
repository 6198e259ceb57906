//! `splice = on`: a 1-to-1 stream channel whose bytes move socket -> pipe -> socket with
//! IORING_OP_SPLICE and never enter the pool. The same promises as the buffer path
//! (tests/relay_collector.rs, tests/relay_tcp.rs) must hold: byte-exact relaying, nothing lost
//! while the collector is away (`on_slow = block`), the bytes still in the pipe going to the
//! redialed collector, a producer that comes back, a flush on SIGTERM. Each scenario runs with
//! both feature sets, and each first checks from the start-up line that the channel really
//! splices (a silent fallback to buffers would pass the byte checks).
//!
//! As in relay_collector.rs, a collector that "goes away" only half-closes and reads on until
//! the relay closes its end, so no byte handed to the old connection is lost unseen.

#[macro_use]
mod common;

use common::*;
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

in_both_feature_sets!(
    splice_moves_32_mib_byte_exact,
    splice_collector_down_at_start_gets_every_byte,
    splice_collector_going_away_is_redialed,
    splice_producer_reconnects,
    splice_sigterm_flushes_the_pipe,
    splice_reload_removing_the_channel_flushes_and_closes_its_pipe,
    splice_half_closing_collector_with_on_fin_keep,
    splice_fan_out_moves_32_mib_to_3_collectors_byte_exact,
    splice_fan_out_collector_down_at_start_gets_every_byte,
    splice_fan_out_collector_going_away_is_redialed,
    splice_fan_out_sigterm_flushes_every_pipe,
    splice_fan_out_reload_removing_the_channel_flushes_and_closes_every_pipe,
);

fn splice_channel(dir: &TempDir, name: &str, input: SocketAddr, collector: SocketAddr) -> String {
    format!(
        "{}[channel {name}]\ninput = tcp-listen://{input}\noutput = tcp://{collector}\nsplice = on\n",
        dir.global_section()
    )
}

fn assert_splices(relay: &Relay) {
    let log = relay.log();
    assert!(
        log.contains("splice on (1 channel)"),
        "the channel does not splice; stderr:\n{log}"
    );
}

/// 32 MiB from one producer to one collector, byte for byte, and the stats say so.
fn splice_moves_32_mib_byte_exact(features: Features) {
    let dir = TempDir::new("splice-bulk");
    let collector = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let caddr = collector.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (splice_channel(&dir, "bulk", input, caddr), input)
    });
    assert_splices(&relay);
    let payload = Arc::new(pattern(40, 32 << 20));
    let writer = write_in_thread(connect_tcp(input), payload.clone(), 1 << 20);
    wait_for("the collector to get 32 MiB", TRANSFER_TIMEOUT, || {
        collector.total_len() >= payload.len()
    });
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    // Nothing more than the stream arrives.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(collector.connections().len(), 1);
    assert_same_bytes("collector", &collector.concatenated(), &payload);
    relay.signal(nix::sys::signal::Signal::SIGUSR1);
    // Both counters, the input's and the output's, say 32 MiB.
    let counted = format!("bytes={} ", payload.len());
    wait_for(
        "the input and output counters in the log",
        READY_TIMEOUT,
        || relay.log().matches(&counted).count() >= 2,
    );
    relay.stop();
}

/// Nobody listens at the collector's address for a second: the pipe fills, the producer is
/// pushed back, and the collector gets every byte once it is up.
fn splice_collector_down_at_start_gets_every_byte(features: Features) {
    let dir = TempDir::new("splice-late");
    let (relay, (input, caddr)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let caddr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (splice_channel(&dir, "late", input, caddr), (input, caddr))
    });
    assert_splices(&relay);
    let payload = Arc::new(pattern(41, 8 << 20));
    let writer = write_in_thread(connect_tcp(input), payload.clone(), 64 * 1024);
    std::thread::sleep(Duration::from_secs(1));
    let collector = Collector::listen(caddr, None);
    wait_for(
        "the collector to get the whole stream",
        TRANSFER_TIMEOUT,
        || collector.total_len() >= payload.len(),
    );
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    assert_same_bytes("collector", &collector.concatenated(), &payload);
    relay.stop();
}

/// The collector half-closes mid-stream and stops listening; the relay closes that connection,
/// redials with backoff, and the new connection carries exactly the rest: what was still in
/// the pipe, then what the producer sends after.
fn splice_collector_going_away_is_redialed(features: Features) {
    let dir = TempDir::new("splice-redial");
    let mut first = Collector::listen("127.0.0.1:0".parse().unwrap(), Some(64 * 1024));
    let caddr = first.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (splice_channel(&dir, "redial", input, caddr), input)
    });
    assert_splices(&relay);
    let payload = Arc::new(pattern(42, 32 << 20));
    let writer = write_in_thread(connect_tcp(input), payload.clone(), 64 * 1024);
    let conn1 = first.leave_mid_stream(1 << 20, payload.len());
    let second = Collector::come_back(&conn1, caddr, payload.len());
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    assert_redialed_stream(&conn1, &second, &payload);
    relay.stop();
}

/// A producer finishes (FIN) and another connects: the collector keeps its one connection and
/// gets both streams back to back.
fn splice_producer_reconnects(features: Features) {
    let dir = TempDir::new("splice-producer");
    let collector = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let caddr = collector.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (splice_channel(&dir, "producers", input, caddr), input)
    });
    assert_splices(&relay);
    let a = pattern(43, 4 << 20);
    let b = pattern(44, 3 << 20);
    let mut p = connect_tcp(input);
    p.write_all(&a).unwrap();
    drop(p);
    wait_for("the first stream", TRANSFER_TIMEOUT, || {
        collector.total_len() >= a.len()
    });
    wait_for(
        "the relay to see the first producer go",
        TRANSFER_TIMEOUT,
        || relay.log().contains("closed the stream"),
    );
    let mut p = connect_tcp(input);
    p.write_all(&b).unwrap();
    drop(p);
    wait_for("the second stream", TRANSFER_TIMEOUT, || {
        collector.total_len() >= a.len() + b.len()
    });
    assert_eq!(collector.connections().len(), 1, "the output was redialed");
    let mut want = a;
    want.extend_from_slice(&b);
    assert_same_bytes("collector", &collector.concatenated(), &want);
    relay.stop();
}

/// The collector is down; the producer's bytes wait in the pipe. SIGTERM: the relay keeps
/// redialing for its shutdown_timeout, the collector comes up, gets every byte, and the relay
/// exits 0.
fn splice_sigterm_flushes_the_pipe(features: Features) {
    let dir = TempDir::new("splice-sigterm");
    let (mut relay, (input, caddr)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let caddr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (splice_channel(&dir, "flush", input, caddr), (input, caddr))
    });
    assert_splices(&relay);
    // Less than the pipe holds (1 MiB), so the producer is never pushed back.
    let payload = pattern(45, 512 << 10);
    produce_and_close(&relay, input, &payload);
    relay.terminate();
    std::thread::sleep(Duration::from_millis(300));
    let collector = Collector::listen(caddr, None);
    assert_exit_0(&mut relay);
    wait_for("the flushed bytes", TRANSFER_TIMEOUT, || {
        collector.total_len() >= payload.len()
    });
    assert_same_bytes("collector", &collector.concatenated(), &payload);
}

/// Pipes the process has open (both ends count).
fn open_pipes(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("pipe:"))
        })
        .count()
}

/// SIGHUP with the splicing channel gone from the file: it flushes what its pipe holds to the
/// collector (which comes up only after the reload), then closes, and both ends of its pipe
/// with it.
fn splice_reload_removing_the_channel_flushes_and_closes_its_pipe(features: Features) {
    let dir = TempDir::new("splice-reload");
    let (mut relay, (input, caddr)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let caddr = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (splice_channel(&dir, "gone", input, caddr), (input, caddr))
    });
    assert_splices(&relay);
    let payload = pattern(46, 256 << 10);
    produce_and_close(&relay, input, &payload);
    let pipes_before = open_pipes(relay.pid());
    remove_channel_gone(&dir, &relay);
    let collector = Collector::listen(caddr, None);
    wait_for("the flushed bytes", TRANSFER_TIMEOUT, || {
        collector.total_len() >= payload.len()
    });
    assert_same_bytes("collector", &collector.concatenated(), &payload);
    wait_for("the channel to close", TRANSFER_TIMEOUT, || {
        relay.log().contains("channel gone: closed")
    });
    relay.assert_running("after the reload");
    assert_eq!(
        open_pipes(relay.pid()),
        pipes_before - 2,
        "both ends of the channel's pipe are closed"
    );
    relay.stop();
}

/// A collector that half-closes at once but reads on, with `on_fin=keep`: it stays the one
/// connection and gets every byte through the pipe.
fn splice_half_closing_collector_with_on_fin_keep(features: Features) {
    let dir = TempDir::new("splice-halfclose");
    let collector = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let caddr = collector.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel halfclose]\ninput = tcp-listen://{input}\noutput = tcp://{caddr} on_fin=keep\nsplice = on\n",
            dir.global_section()
        );
        (conf, input)
    });
    assert_splices(&relay);
    wait_for("the relay to dial the collector", TRANSFER_TIMEOUT, || {
        !collector.connections().is_empty()
    });
    collector.connections()[0]
        .tcp_handle()
        .expect("tcp")
        .shutdown(Shutdown::Write)
        .expect("half-close");
    std::thread::sleep(Duration::from_millis(300));
    let payload = Arc::new(pattern(47, 8 << 20));
    let writer = write_in_thread(connect_tcp(input), payload.clone(), 64 * 1024);
    wait_for(
        "the collector to get the whole stream",
        TRANSFER_TIMEOUT,
        || collector.total_len() >= payload.len(),
    );
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    assert_eq!(
        collector.connections().len(),
        1,
        "redialed a half-closing collector"
    );
    assert_same_bytes("collector", &collector.concatenated(), &payload);
    relay.stop();
}

/// A channel from a tcp-listen input to three `tcp://` collectors, spliced with tee.
fn fan_out_channel(
    dir: &TempDir,
    name: &str,
    input: SocketAddr,
    collectors: &[SocketAddr],
) -> String {
    let mut c = format!(
        "{}[channel {name}]\ninput = tcp-listen://{input}\n",
        dir.global_section()
    );
    for a in collectors {
        c.push_str(&format!("output = tcp://{a}\n"));
    }
    c.push_str("splice = on\n");
    c
}

fn assert_tees(relay: &Relay) {
    let log = relay.log();
    assert!(
        log.contains("splice on (1 channel, 1 fan-out with tee)"),
        "the channel does not fan out with tee; stderr:\n{log}"
    );
}

/// 32 MiB from one producer to three collectors through tee: each gets the stream byte for
/// byte.
fn splice_fan_out_moves_32_mib_to_3_collectors_byte_exact(features: Features) {
    let dir = TempDir::new("tee-bulk");
    let collectors: Vec<Collector> = (0..3)
        .map(|_| Collector::listen("127.0.0.1:0".parse().unwrap(), None))
        .collect();
    let addrs: Vec<SocketAddr> = collectors.iter().map(|c| c.addr).collect();
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (fan_out_channel(&dir, "tee", input, &addrs), input)
    });
    assert_tees(&relay);
    let payload = Arc::new(pattern(50, 32 << 20));
    let writer = write_in_thread(connect_tcp(input), payload.clone(), 1 << 20);
    wait_for("every collector to get 32 MiB", TRANSFER_TIMEOUT, || {
        collectors.iter().all(|c| c.total_len() >= payload.len())
    });
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    std::thread::sleep(Duration::from_millis(200));
    for (i, c) in collectors.iter().enumerate() {
        assert_eq!(c.connections().len(), 1, "collector {i}");
        assert_same_bytes(&format!("collector {i}"), &c.concatenated(), &payload);
    }
    relay.stop();
}

/// The second of three collectors is down for a second: its pipe keeps its bytes, the rounds
/// wait for it (the producer is pushed back), and once it is up all three get every byte.
fn splice_fan_out_collector_down_at_start_gets_every_byte(features: Features) {
    let dir = TempDir::new("tee-late");
    let first = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let third = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let late = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let addrs = [first.addr, late, third.addr];
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (fan_out_channel(&dir, "late", input, &addrs), input)
    });
    assert_tees(&relay);
    let payload = Arc::new(pattern(51, 8 << 20));
    let writer = write_in_thread(connect_tcp(input), payload.clone(), 64 * 1024);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        first.total_len() < payload.len(),
        "the collectors that were up got everything while one was down: no push-back"
    );
    let second = Collector::listen(late, None);
    let all = [&first, &second, &third];
    wait_for(
        "every collector to get the whole stream",
        TRANSFER_TIMEOUT,
        || all.iter().all(|c| c.total_len() >= payload.len()),
    );
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    for (i, c) in all.iter().enumerate() {
        assert_same_bytes(&format!("collector {i}"), &c.concatenated(), &payload);
    }
    relay.stop();
}

/// The middle one of three collectors goes away mid-stream and comes back: the bytes in its
/// pipe go to the redialed connection, the rounds wait for it meanwhile, and the other two keep
/// their one connection and get the stream byte for byte.
fn splice_fan_out_collector_going_away_is_redialed(features: Features) {
    let dir = TempDir::new("tee-redial");
    let first = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let mut middle = Collector::listen("127.0.0.1:0".parse().unwrap(), Some(64 * 1024));
    let third = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let maddr = middle.addr;
    let addrs = [first.addr, maddr, third.addr];
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (fan_out_channel(&dir, "teeredial", input, &addrs), input)
    });
    assert_tees(&relay);
    let payload = Arc::new(pattern(53, 32 << 20));
    let writer = write_in_thread(connect_tcp(input), payload.clone(), 64 * 1024);
    let gone = middle.leave_mid_stream(1 << 20, payload.len());
    let back = Collector::come_back(&gone, maddr, payload.len());
    wait_for(
        "the other collectors to get the whole stream",
        TRANSFER_TIMEOUT,
        || {
            [&first, &third]
                .iter()
                .all(|c| c.total_len() >= payload.len())
        },
    );
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    assert_redialed_stream(&gone, &back, &payload);
    for (name, c) in [("first", &first), ("third", &third)] {
        assert_eq!(c.connections().len(), 1, "{name} collector was reconnected");
        assert_same_bytes(&format!("{name} collector"), &c.concatenated(), &payload);
    }
    relay.stop();
}

/// Three collectors, the last one down; SIGTERM after the producer left: the relay flushes the
/// intake pipe and every output pipe, redialing the missing collector within its
/// shutdown_timeout, and exits 0 with every collector holding every byte.
fn splice_fan_out_sigterm_flushes_every_pipe(features: Features) {
    let dir = TempDir::new("tee-sigterm");
    let first = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let second = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let late = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let addrs = [first.addr, second.addr, late];
    let (mut relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (fan_out_channel(&dir, "flush", input, &addrs), input)
    });
    assert_tees(&relay);
    // Less than one pipe holds (1 MiB): the producer is never pushed back.
    let payload = pattern(52, 512 << 10);
    produce_and_close(&relay, input, &payload);
    relay.terminate();
    std::thread::sleep(Duration::from_millis(300));
    let third = Collector::listen(late, None);
    assert_exit_0(&mut relay);
    for (i, c) in [&first, &second, &third].iter().enumerate() {
        wait_for("the flushed bytes", TRANSFER_TIMEOUT, || {
            c.total_len() >= payload.len()
        });
        assert_same_bytes(&format!("collector {i}"), &c.concatenated(), &payload);
    }
}

/// SIGHUP with a 3-way fan-out channel gone from the file, one collector down: the channel
/// flushes its intake pipe and every output pipe (the missing collector comes up after the
/// reload), then closes, and all four pipes with it.
fn splice_fan_out_reload_removing_the_channel_flushes_and_closes_every_pipe(features: Features) {
    let dir = TempDir::new("tee-reload");
    let first = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let second = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let late = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
    let addrs = [first.addr, late, second.addr];
    let (mut relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        (fan_out_channel(&dir, "gone", input, &addrs), input)
    });
    assert_tees(&relay);
    let payload = pattern(53, 256 << 10);
    produce_and_close(&relay, input, &payload);
    let pipes_before = open_pipes(relay.pid());
    remove_channel_gone(&dir, &relay);
    let third = Collector::listen(late, None);
    for (i, c) in [&first, &third, &second].iter().enumerate() {
        wait_for("the flushed bytes", TRANSFER_TIMEOUT, || {
            c.total_len() >= payload.len()
        });
        assert_same_bytes(&format!("collector {i}"), &c.concatenated(), &payload);
    }
    wait_for("the channel to close", TRANSFER_TIMEOUT, || {
        relay.log().contains("channel gone: closed")
    });
    relay.assert_running("after the reload");
    assert_eq!(
        open_pipes(relay.pid()),
        pipes_before - 8,
        "both ends of the intake pipe and of the three output pipes are closed"
    );
    relay.stop();
}

/// Reloads with a file that holds another channel only (a file needs one), so that channel
/// `gone` is removed, and waits until the relay says so.
fn remove_channel_gone(dir: &TempDir, relay: &Relay) {
    let other = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    let sink = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
    std::fs::write(
        dir.join("ringrelay.conf"),
        format!(
            "{}[channel other]\ninput = udp://{other}\noutput = udp://{sink}\n",
            dir.global_section()
        ),
    )
    .unwrap();
    relay.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload", READY_TIMEOUT, || {
        relay.log().contains("channel gone removed")
    });
}

/// One producer connects to `input`, sends `payload` and closes; returns once the relay logged
/// that the producer went.
fn produce_and_close(relay: &Relay, input: SocketAddr, payload: &[u8]) {
    let mut p = connect_tcp(input);
    p.write_all(payload).unwrap();
    drop(p);
    wait_for("the relay to see the producer go", TRANSFER_TIMEOUT, || {
        relay.log().contains("closed the stream")
    });
}

/// The relay, sent SIGTERM, exits with status 0.
fn assert_exit_0(relay: &mut Relay) {
    let status = relay.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit after SIGTERM; stderr:\n{}",
        relay.log()
    );
}
