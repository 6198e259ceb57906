//! Startup failures of `ringrelay run`: an address that is taken or cannot be bound makes the
//! daemon exit 1 with a message naming the channel and the URL. Each runs with both feature sets.

#[macro_use]
mod common;

use common::*;
use std::net::{TcpListener, UdpSocket};

in_both_feature_sets!(
    tcp_listen_input_port_in_use,
    udp_input_port_in_use,
    subscriber_output_port_in_use,
    unbindable_address,
);

/// Runs `ringrelay run -c` on `conf` (with the usual [global] section) and expects exit code 1
/// before any `ready`, with stderr naming `channel` and `url`.
fn expect_startup_failure(features: Features, dir: &TempDir, body: &str, channel: &str, url: &str) {
    let conf = dir.join("ringrelay.conf");
    std::fs::write(&conf, format!("{}{body}", dir.global_section())).unwrap();
    let args = vec![
        "run".to_string(),
        "-c".to_string(),
        conf.display().to_string(),
    ];
    match Relay::spawn(features, &args) {
        Started::Ready(r) => panic!(
            "ringrelay got ready although {url} cannot be bound; stderr:\n{}",
            r.log()
        ),
        Started::Exited(status, log) => {
            assert_eq!(status.code(), Some(1), "exit code; stderr:\n{log}");
            assert!(
                log.contains(channel),
                "stderr does not name the channel '{channel}':\n{log}"
            );
            assert!(
                log.contains(url),
                "stderr does not name the URL '{url}':\n{log}"
            );
        }
    }
}

fn tcp_listen_input_port_in_use(features: Features) {
    let dir = TempDir::new("in-use-tcp");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp-listen://{}", taken.local_addr().unwrap());
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    let body = format!(
        "[channel busy_tcp]\ninput = {url}\noutput = udp://{}\n",
        out.local_addr().unwrap()
    );
    expect_startup_failure(features, &dir, &body, "busy_tcp", &url);
}

fn udp_input_port_in_use(features: Features) {
    let dir = TempDir::new("in-use-udp");
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}", taken.local_addr().unwrap());
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    let body = format!(
        "[channel busy_udp]\ninput = {url}\noutput = udp://{}\n",
        out.local_addr().unwrap()
    );
    expect_startup_failure(features, &dir, &body, "busy_udp", &url);
}

/// The input binds fine; a second channel's subscriber port is taken.
fn subscriber_output_port_in_use(features: Features) {
    let dir = TempDir::new("in-use-output");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp-listen://{}", taken.local_addr().unwrap());
    let body = format!(
        "[channel fine]\ninput = udp://127.0.0.1:{}\noutput = file://{}\n\n[channel busy_out]\ninput = udp://127.0.0.1:{}\noutput = {url}\n",
        free_udp_port(LOCALHOST4),
        dir.join("fine.raw").display(),
        free_udp_port(LOCALHOST4),
    );
    expect_startup_failure(features, &dir, &body, "busy_out", &url);
}

/// An address that belongs to no interface of this machine (TEST-NET-3, never routed): bind
/// fails with EADDRNOTAVAIL. No packet is sent anywhere.
fn unbindable_address(features: Features) {
    let dir = TempDir::new("unbindable");
    let url = "tcp-listen://203.0.113.77:6000".to_string();
    // Only meaningful if this machine really cannot bind it.
    if TcpListener::bind("203.0.113.77:6000").is_ok() {
        eprintln!("NOTE: skipping: 203.0.113.77 is an address of this machine");
        return;
    }
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    let body = format!(
        "[channel nowhere]\ninput = {url}\noutput = udp://{}\n",
        out.local_addr().unwrap()
    );
    expect_startup_failure(features, &dir, &body, "nowhere", &url);
}
