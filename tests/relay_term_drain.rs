//! SIGTERM reads what the kernel already accepted: datagrams waiting in a UDP input's socket
//! when the stop comes are relayed and flushed, not dropped with the socket.
//!
//! The relay is stopped (SIGSTOP) while the datagrams are sent, so they all wait in its input
//! socket; SIGTERM and SIGCONT then reach it together. Runs with both feature sets.

#[macro_use]
mod common;

use common::*;
use nix::sys::signal::Signal;
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

in_both_feature_sets!(datagrams_in_the_socket_at_sigterm_are_relayed);

const COUNT: usize = 400;
const SIZE: usize = 1000;

fn datagrams_in_the_socket_at_sigterm_are_relayed(features: Features) {
    let dir = TempDir::new("term-drain-udp");
    let file = dir.join("out.raw");
    let (mut relay, input) = Relay::start(features, &dir, || {
        let input = SocketAddr::new(LOCALHOST4, free_udp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel u]\ninput = udp://{input} rcvbuf=8MiB\noutput = file://{}\n",
            dir.global_section(),
            file.display()
        );
        (conf, input)
    });
    relay.signal(Signal::SIGSTOP);
    let tx = UdpSocket::bind((LOCALHOST4, 0)).unwrap();
    let sent: Vec<Vec<u8>> = (0..COUNT)
        .map(|i| {
            let mut d = pattern(i as u64, SIZE);
            d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            d
        })
        .collect();
    for d in &sent {
        tx.send_to(d, input).expect("send");
    }
    // Give loopback a moment to queue the last ones in the stopped relay's socket.
    thread::sleep(Duration::from_millis(100));
    relay.terminate();
    relay.signal(Signal::SIGCONT);
    let status = relay
        .wait_exit(Duration::from_secs(30))
        .expect("the relay exits after SIGTERM");
    assert!(status.success(), "exit {status}; stderr:\n{}", relay.log());
    let got = std::fs::read(&file).unwrap_or_default();
    let want: Vec<u8> = sent.concat();
    assert_eq!(
        got.len(),
        want.len(),
        "the file holds {} of the {} datagrams that waited in the input socket at SIGTERM; stderr:\n{}",
        got.len() / SIZE,
        COUNT,
        relay.log()
    );
    assert_same_bytes("file after SIGTERM", &got, &want);
}
