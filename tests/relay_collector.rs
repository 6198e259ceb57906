//! `tcp://` outputs: the relay dials a collector, and with `on_slow = block` (their default) it
//! loses nothing while the collector is away. Each scenario runs with both feature sets, on
//! the buffer path (`splice = off`: these 1-to-1 channels would splice by default, and
//! tests/relay_splice.rs covers that path).
//!
//! What plain TCP does and does not guarantee, and so what these tests can demand:
//! * Bytes the relay has not yet handed to a connection stay queued (under `block` the relay
//!   stops reading its input instead of dropping), and go out on the next connection.
//! * Bytes already handed to a connection's kernel socket are gone for the relay: if the
//!   collector closed without reading them, nobody can tell how many it read. So the tests never
//!   let the collector discard anything: the collector that "goes away" only half-closes (sends
//!   FIN) and keeps reading until the relay closes its end. Every byte the relay wrote on the old
//!   connection is then read, and the old connection's bytes followed by the new connection's
//!   bytes must be exactly the stream.

#[macro_use]
mod common;

use common::*;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

in_both_feature_sets!(
    collector_down_at_start_gets_every_byte,
    collector_going_away_is_redialed,
    half_closing_collector_with_on_fin_keep,
);

/// The collector is not listening when data start; it comes up a second later and receives
/// every byte from the first one.
fn collector_down_at_start_gets_every_byte(features: Features) {
    let dir = TempDir::new("collector-late");
    let (relay, (input, collector_addr)) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        // Nobody listens here yet; the relay's dials are refused and retried with backoff.
        let collector = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel late]\ninput = tcp-listen://{input}\noutput = tcp://{collector} on_slow=block max_backlog=1MiB\nsplice = off\n",
            dir.global_section()
        );
        (conf, (input, collector))
    });
    let payload = Arc::new(pattern(20, 8 << 20));
    let producer = connect_tcp(input);
    let writer = write_in_thread(producer, payload.clone(), 64 * 1024);
    std::thread::sleep(Duration::from_secs(1));

    let collector = Collector::listen(collector_addr, None);
    wait_for(
        "the collector to receive the whole stream",
        TRANSFER_TIMEOUT,
        || collector.total_len() >= payload.len(),
    );
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    assert_same_bytes("collector", &collector.concatenated(), &payload);
    relay.stop();
}

/// The collector goes away mid-stream (FIN, listener closed for a second) and comes back on the
/// same port: the relay redials, and the two connections together carry the stream exactly once.
fn collector_going_away_is_redialed(features: Features) {
    let dir = TempDir::new("collector-redial");
    // The first collector's accepted sockets get a small fixed receive buffer, so the relay cannot
    // hand it the whole stream before it notices the collector's FIN.
    let mut first = Collector::listen("127.0.0.1:0".parse().unwrap(), Some(64 * 1024));
    let collector_addr = first.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel redial]\ninput = tcp-listen://{input}\noutput = tcp://{collector_addr} on_slow=block max_backlog=1MiB\nsplice = off\n",
            dir.global_section()
        );
        (conf, input)
    });
    let payload = Arc::new(pattern(21, 32 << 20));
    let producer = connect_tcp(input);
    let writer = write_in_thread(producer, payload.clone(), 64 * 1024);
    // Mid-stream: after the first MiB, the collector goes away for a second.
    let conn1 = first.leave_mid_stream(1 << 20, payload.len());
    let second = Collector::come_back(&conn1, collector_addr, payload.len());
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    assert_redialed_stream(&conn1, &second, &payload);
    relay.stop();
}

/// A collector that half-closes as soon as it is connected (`nc -l PORT < /dev/null > file`)
/// but goes on reading: with `on_fin=keep` it stays the one connection and gets every byte.
fn half_closing_collector_with_on_fin_keep(features: Features) {
    let dir = TempDir::new("collector-halfclose");
    let collector = Collector::listen("127.0.0.1:0".parse().unwrap(), None);
    let collector_addr = collector.addr;
    let (relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel halfclose]\ninput = tcp-listen://{input}\noutput = tcp://{collector_addr} on_fin=keep\nsplice = off\n",
            dir.global_section()
        );
        (conf, input)
    });
    wait_for("the relay to dial the collector", TRANSFER_TIMEOUT, || {
        !collector.connections().is_empty()
    });
    first_connection_socket(&collector)
        .shutdown(Shutdown::Write)
        .expect("half-close");
    // Give the relay time to see the FIN before any data flow.
    std::thread::sleep(Duration::from_millis(300));
    let payload = Arc::new(pattern(22, 8 << 20));
    let writer = write_in_thread(connect_tcp(input), payload.clone(), 64 * 1024);
    wait_for(
        "the collector to receive the whole stream",
        TRANSFER_TIMEOUT,
        || collector.total_len() >= payload.len(),
    );
    join_with_timeout(writer, TRANSFER_TIMEOUT, "the producer").expect("produce");
    assert_eq!(
        collector.connections().len(),
        1,
        "the relay redialed a collector that only half-closed"
    );
    assert_same_bytes("collector", &collector.concatenated(), &payload);
    relay.stop();
}

/// A handle on the first accepted connection's socket, for a half-close.
fn first_connection_socket(c: &Collector) -> std::net::TcpStream {
    c.connections()[0].tcp_handle().expect("a tcp connection")
}
