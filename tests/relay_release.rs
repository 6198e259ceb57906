//! Subscribers that leave an idle channel are released at once, and a relay at its descriptor
//! limit keeps serving what it has and recovers when descriptors come back.
//!
//! Nothing flows in either scenario until the end: a subscriber's close must be noticed from
//! its FIN or reset alone, not from the next write to it (which never comes on an idle
//! channel). Runs with both feature sets.

#[macro_use]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::thread;
use std::time::{Duration, Instant};

in_both_feature_sets!(
    departed_subscribers_free_max_clients_on_an_idle_channel,
    fd_limit_lockout_ends_when_subscribers_leave,
    half_closed_subscriber_stays_with_on_fin_keep,
    refusal_flood_is_summed_up,
);

/// The `clients=` of a fresh counters line for output `url`.
fn clients(relay: &Relay, url: &str) -> u64 {
    output_counter(relay, url, "clients")
}

/// Waits until output `url` counts `want` clients.
fn wait_clients(relay: &Relay, url: &str, want: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = clients(relay, url);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: output {url} still counts {n} clients after 10 s (want {want}); stderr:\n{}",
            relay.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `data` as the producer and checks that `sub` receives exactly it.
fn produce_and_receive(input: SocketAddr, sub: &mut TcpStream, data: &[u8]) {
    let mut p = connect_tcp(input);
    p.write_all(data).expect("producer write");
    let mut got = vec![0u8; data.len()];
    sub.set_read_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
    sub.read_exact(&mut got)
        .expect("the late subscriber receives the producer's bytes");
    assert_same_bytes("late subscriber", &got, data);
}

/// Waits until the relay logs that it accepted the subscriber at `sub`.
fn wait_accepted(relay: &Relay, sub: &TcpStream, url: &str) {
    let peer = sub.local_addr().unwrap();
    let line = format!("subscriber {peer} connected to {url}");
    wait_for("the relay to accept a subscriber", READY_TIMEOUT, || {
        relay.log().contains(&line)
    });
}

/// With `max_clients=2`, two subscribers come and go while nothing flows; a third must then be
/// accepted and get the data.
fn departed_subscribers_free_max_clients_on_an_idle_channel(features: Features) {
    let dir = TempDir::new("release-maxclients");
    let (relay, (input, subs)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}\n[channel idle]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} max_clients=2\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let url = format!("tcp-listen://{subs}");
    let a = connect_tcp(subs);
    let b = connect_tcp(subs);
    wait_accepted(&relay, &a, &url);
    wait_accepted(&relay, &b, &url);
    assert_eq!(clients(&relay, &url), 2);
    drop(a);
    // One leaves by reset (SO_LINGER 0), the other by an ordinary close.
    socket2::SockRef::from(&b)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(b);
    wait_clients(
        &relay,
        &url,
        0,
        "after both subscribers left an idle channel",
    );

    let mut c = connect_tcp(subs);
    wait_accepted(&relay, &c, &url);
    let data = pattern(7, 64 * 1024);
    produce_and_receive(input, &mut c, &data);
    assert!(
        !relay.log().contains(" refused: "),
        "no subscriber may be refused; stderr:\n{}",
        relay.log()
    );
    relay.stop();
}

/// Under `RLIMIT_NOFILE` 64, 100 subscribers connect and close while nothing flows. The relay
/// runs out of descriptors on the way, says which listener is affected, and recovers: a
/// producer is then accepted and a new subscriber gets its bytes.
fn fd_limit_lockout_ends_when_subscribers_leave(features: Features) {
    let dir = TempDir::new("release-fdlimit");
    let (relay, (input, subs)) = Relay::start_with(
        features,
        &dir,
        || {
            let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
            let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
            let conf = format!(
                "{}buffer_count = 64\n\n[channel lim]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} max_clients=1000\n",
                dir.global_section()
            );
            (conf, (input, subs))
        },
        |cmd| {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        64,
                        64,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        },
    );
    let url = format!("tcp-listen://{subs}");
    // Hold 70 at once (more than the relay can accept), then let all of them go.
    let held: Vec<TcpStream> = (0..70).map(|_| connect_tcp(subs)).collect();
    wait_for("the relay to run out of descriptors", READY_TIMEOUT, || {
        relay.log().contains("Too many open files")
    });
    drop(held);
    for _ in 0..30 {
        let s = connect_tcp(subs);
        s.shutdown(Shutdown::Both).ok();
    }
    wait_clients(&relay, &url, 0, "after 100 subscribers left");
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains("accept failed") && l.contains("Too many open files"))
        .expect("an accept failure line");
    assert!(
        line.contains(&url),
        "the accept failure names the listener {url}: {line}"
    );

    // Its "connected" line may be summed up (100 connects in a minute): count it instead.
    let mut late = connect_tcp(subs);
    wait_clients(&relay, &url, 1, "after a late subscriber connected");
    let data = pattern(11, 256 * 1024);
    produce_and_receive(input, &mut late, &data);
    relay.stop();
}

/// `on_fin=keep`: a subscriber that only shuts down its sending side stays and gets the data.
fn half_closed_subscriber_stays_with_on_fin_keep(features: Features) {
    let dir = TempDir::new("release-keep");
    let (relay, (input, subs)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}\n[channel keep]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} on_fin=keep\n",
            dir.global_section()
        );
        (conf, (input, subs))
    });
    let url = format!("tcp-listen://{subs}");
    let mut s = connect_tcp(subs);
    wait_accepted(&relay, &s, &url);
    s.shutdown(Shutdown::Write).unwrap();
    // Give a FIN time to be seen; the subscriber must still be there.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(clients(&relay, &url), 1);
    let data = pattern(13, 64 * 1024);
    produce_and_receive(input, &mut s, &data);
    relay.stop();
}

/// A connect flood refused by `max_clients` costs a bounded number of log lines: the first
/// refusal, then one summary with the count (at the minute's end, or at the stop).
fn refusal_flood_is_summed_up(features: Features) {
    const FLOOD: usize = 300;
    let dir = TempDir::new("release-flood");
    let (mut relay, subs) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let subs = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}\n[channel flood]\ninput = tcp-listen://{input}\noutput = tcp-listen://{subs} max_clients=1\n",
            dir.global_section()
        );
        (conf, subs)
    });
    let url = format!("tcp-listen://{subs}");
    let first = connect_tcp(subs);
    wait_accepted(&relay, &first, &url);
    for _ in 0..FLOOD {
        let mut s = connect_tcp(subs);
        // Refused: the relay closes it at once.
        s.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).unwrap_or(0),
            0,
            "a refused subscriber is closed"
        );
    }
    relay.terminate();
    let status = relay.wait_exit(READY_TIMEOUT).expect("exit after SIGTERM");
    assert!(status.success());
    let log = relay.log();
    let refusals = log.lines().filter(|l| l.contains(" refused: ")).count();
    assert_eq!(
        refusals, 1,
        "{FLOOD} refusals must log one line, then a summary; stderr:\n{log}"
    );
    let summary = format!(
        "{} more subscribers refused (max_clients reached)",
        FLOOD - 1
    );
    assert!(
        log.contains(&summary),
        "the stop logs the summary '{summary}'; stderr:\n{log}"
    );
    drop(first);
}
