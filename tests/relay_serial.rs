//! `serial://` inputs, with pseudo-terminals standing in for USB-serial adapters: the relay's
//! input is a by-id-style symlink in a temp dir pointing at a pty's slave; the test writes on
//! the master. Unplugging is closing the master (the slave then reads EIO or hangs up);
//! plugging back in is a NEW pty behind the same symlink, re-pointed atomically (a new link
//! renamed over the old), as udev does for `/dev/serial/by-id`.
//!
//! A pty takes the termios settings but ignores the rate; what is checked here is the relay's
//! side: raw mode (bytes such as `\n` and `\r` pass unchanged), the reads through the ring,
//! the unplug, the reopen with backoff, and that nothing else of the relay is disturbed.

#[macro_use]
mod common;

use common::counters::{counter_in, input_counters_line};
use common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

in_both_feature_sets!(
    unplug_and_replug_behind_a_by_id_link,
    a_link_repointed_to_another_device_is_followed,
    a_port_missing_at_start_is_opened_when_it_appears,
    nmea_from_a_serial_port_leaves_one_datagram_per_sentence,
    a_silent_serial_port_is_reopened_after_idle_timeout,
);

/// A pseudo-terminal: the master the test writes on, and the slave's path.
struct Pty {
    master: File,
    slave: Option<OwnedFd>,
    path: PathBuf,
}

impl Pty {
    /// Both ends are opened close-on-exec (openpty(3) does not): tests run in parallel
    /// threads, and a relay spawned by another one must not inherit this master, or closing
    /// it here would unplug nothing.
    fn new() -> Pty {
        use nix::fcntl::OFlag;
        let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let master = nix::pty::posix_openpt(flags).expect("posix_openpt");
        nix::pty::grantpt(&master).expect("grantpt");
        nix::pty::unlockpt(&master).expect("unlockpt");
        let path = PathBuf::from(nix::pty::ptsname_r(&master).expect("ptsname"));
        let slave = nix::fcntl::open(&path, flags, nix::sys::stat::Mode::empty()).expect("slave");
        Pty {
            master: File::from(OwnedFd::from(master)),
            slave: Some(slave),
            path,
        }
    }

    /// Lets go of the test's own descriptor on the slave (the relay holds its own).
    fn release_slave(&mut self) {
        self.slave = None;
    }
}

/// Points symlink `link` at `target` atomically: a new link renamed over the old one.
fn point(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename the link into place");
}

/// NMEA-like sentences `from..to`, CR LF ended, as a GPS sends them.
fn sentences(from: usize, to: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..to {
        let body = format!("GPGGA,{i:06},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        out.extend_from_slice(format!("${body}*{sum:02X}\r\n").as_bytes());
    }
    out
}

/// Receives datagrams in a thread and keeps their payloads, concatenated.
fn udp_collector(sock: UdpSocket) -> Arc<Mutex<Vec<u8>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        // Ends with the test process.
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                g.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    got
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Writes `data` on a pty master in small pieces (as a UART delivers it).
fn write_slowly(master: &mut File, data: &[u8]) {
    for piece in data.chunks(97) {
        master.write_all(piece).expect("write on the pty master");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A GPS on a by-id link is unplugged and plugged back in as a new pty: the relay logs each
/// once, reopens it with backoff and goes on; its subscriber and UDP destination get every
/// byte written while it was plugged in, in order, and never lose their connection; another
/// channel flows on untouched; SIGTERM still stops the relay cleanly.
fn unplug_and_replug_behind_a_by_id_link(features: Features) {
    let dir = TempDir::new("serial-replug");
    std::fs::create_dir(dir.join("by-id")).unwrap();
    let link = dir
        .join("by-id")
        .join("usb-u-blox_AG_GNSS_receiver-if00-port0");
    let mut gps = Pty::new();
    point(&link, &gps.path);
    let udp = UdpSocket::bind((LOCALHOST4, 0)).unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let got_udp = udp_collector(udp);
    let url = format!("serial://{}", link.display());
    let (mut relay, (sub_addr, other_in, other_out)) = Relay::start(features, &dir, || {
        let sub = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let other_in = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let other_out = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel gps]\ninput = {url} baud=4800\noutput = tcp-listen://{sub}\n\
             output = udp://{udp_addr}\n\n\
             [channel other]\ninput = tcp-listen://{other_in}\noutput = tcp-listen://{other_out}\n",
            dir.global_section()
        );
        (conf, (sub, other_in, other_out))
    });
    wait_for("the port opened", READY_TIMEOUT, || {
        relay.log().contains(&format!("serial port {url} opened"))
    });
    gps.release_slave();
    let sub = StreamSink::tcp("gps subscriber", sub_addr);
    let other_sub = StreamSink::tcp("other subscriber", other_out);
    let mut producer = connect_tcp(other_in);
    ping_stream(&mut gps.master, &[&sub]);
    ping_stream(&mut producer, &[&other_sub]);
    wait_for("the pings by UDP", READY_TIMEOUT, || {
        !got_udp.lock().unwrap().is_empty()
    });

    let before = sentences(0, 40);
    write_slowly(&mut gps.master, &before);
    expect_after_pings(&sub, &before, TRANSFER_TIMEOUT);
    let other1 = pattern(1, 50_000);
    producer.write_all(&other1).unwrap();

    // Unplugged.
    drop(gps);
    wait_for("the unplug noticed", READY_TIMEOUT, || {
        relay.log().contains(" gone ")
    });
    thread::sleep(Duration::from_millis(300));
    // Plugged back in: a new device node behind the same name.
    let mut gps = Pty::new();
    point(&link, &gps.path);
    wait_for("the port reopened", Duration::from_secs(15), || {
        relay.log().contains(&format!("serial port {url} reopened"))
    });
    gps.release_slave();
    let after = sentences(40, 100);
    write_slowly(&mut gps.master, &after);
    let other2 = pattern(2, 50_000);
    producer.write_all(&other2).unwrap();

    let want: Vec<u8> = [before.clone(), after].concat();
    expect_after_pings(&sub, &want, TRANSFER_TIMEOUT);
    wait_for("every byte by UDP", TRANSFER_TIMEOUT, || {
        strip_pings(&got_udp.lock().unwrap()).len() >= want.len()
    });
    assert_same_bytes(
        "UDP destination",
        strip_pings(&got_udp.lock().unwrap()),
        &want,
    );
    expect_after_pings(&other_sub, &[other1, other2].concat(), TRANSFER_TIMEOUT);
    assert_eq!(sub.end(), None, "the subscriber kept its connection");
    assert_eq!(other_sub.end(), None);
    relay.assert_running("after the replug");

    let log = relay.log();
    assert_eq!(count(&log, " gone "), 1, "the unplug logged once:\n{log}");
    assert_eq!(count(&log, "reopened"), 1, "the reopen logged once:\n{log}");
    assert_eq!(
        count(&log, "cannot open serial port"),
        0,
        "failed reopens after an unplug are not worth a line each:\n{log}"
    );
    let c = input_counters_line(&relay, "gps");
    assert_eq!(counter_in(&c, "reconnects"), 1, "{c}");
    relay.stop();
}

/// The by-id link is re-pointed to another device while the old one is still there (a
/// replug that udev saw before the relay read an error): the path check notices within a
/// tick, and the relay reads the new device.
fn a_link_repointed_to_another_device_is_followed(features: Features) {
    let dir = TempDir::new("serial-switch");
    let link = dir.join("usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0");
    let mut first = Pty::new();
    point(&link, &first.path);
    let url = format!("serial://{}", link.display());
    let (relay, sub_addr) = Relay::start(features, &dir, || {
        let sub = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel ais]\ninput = {url} baud=38400\noutput = tcp-listen://{sub}\n",
            dir.global_section()
        );
        (conf, sub)
    });
    wait_for("the port opened", READY_TIMEOUT, || {
        relay.log().contains(&format!("serial port {url} opened"))
    });
    first.release_slave();
    let sub = StreamSink::tcp("ais subscriber", sub_addr);
    ping_stream(&mut first.master, &[&sub]);
    let one = b"!AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0*26\r\n".repeat(20);
    first.master.write_all(&one).unwrap();
    expect_after_pings(&sub, &one, TRANSFER_TIMEOUT);

    let mut second = Pty::new();
    point(&link, &second.path);
    wait_for("the new device opened", Duration::from_secs(10), || {
        relay.log().contains(&format!("serial port {url} reopened"))
    });
    assert!(
        relay.log().contains("names another device now"),
        "{}",
        relay.log()
    );
    second.release_slave();
    let two = b"!AIVDM,1,1,,B,33aEOK?P00PD2wVMdLDRhgvL289?,0*27\r\n".repeat(20);
    second.master.write_all(&two).unwrap();
    expect_after_pings(&sub, &[one, two].concat(), TRANSFER_TIMEOUT);
    drop(first);
    relay.stop();
}

/// A port that does not exist yet: `check` accepts the file with a warning on the input's
/// line, `run` starts, says once that it cannot open it, and opens it when it appears.
fn a_port_missing_at_start_is_opened_when_it_appears(features: Features) {
    let dir = TempDir::new("serial-late");
    let link = dir.join("usb-Prolific_USB-Serial_Controller-if00-port0");
    let url = format!("serial://{}", link.display());
    let (relay, sub_addr) = Relay::start(features, &dir, || {
        let sub = SocketAddr::new(LOCALHOST4, free_tcp_port(LOCALHOST4));
        let conf = format!(
            "{}[channel wx]\ninput = {url} baud=19200 databits=7 parity=even stopbits=2\n\
             output = tcp-listen://{sub}\n",
            dir.global_section()
        );
        (conf, sub)
    });
    let (code, out, err) = run_to_end(features, &["check", "-c", "ringrelay.conf"], dir.path());
    assert_eq!(code, Some(0), "check accepts it: {err}");
    assert!(
        out.contains(&format!(
            "input = {url} baud=19200 databits=7 parity=even stopbits=2 flow=none"
        )),
        "{out}"
    );
    let warning = err
        .lines()
        .find(|l| l.starts_with("ringrelay.conf:"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    let conf = std::fs::read_to_string(dir.join("ringrelay.conf")).unwrap();
    let line = conf.lines().position(|l| l.starts_with("input =")).unwrap() + 1;
    assert!(
        warning.contains(&format!(":{line}: input: warning: serial port")),
        "{warning}"
    );
    wait_for("the failed open logged", READY_TIMEOUT, || {
        relay.log().contains("cannot open serial port")
    });
    thread::sleep(Duration::from_millis(500));
    let mut pty = Pty::new();
    point(&link, &pty.path);
    wait_for("the port opened", Duration::from_secs(15), || {
        relay.log().contains(&format!("serial port {url} opened"))
    });
    pty.release_slave();
    let sub = StreamSink::tcp("wx subscriber", sub_addr);
    ping_stream(&mut pty.master, &[&sub]);
    let data = b"0R0,Dn=236D,Dm=240D,Sn=0.0M,Sm=0.1M\r\n".repeat(10);
    pty.master.write_all(&data).unwrap();
    expect_after_pings(&sub, &data, TRANSFER_TIMEOUT);
    let log = relay.log();
    assert_eq!(count(&log, "cannot open serial port"), 1, "{log}");
    relay.stop();
}

/// `ringrelay gen` writes to a serial port set raw: every byte value arrives unchanged (a tty
/// left cooked would turn `\n` into `\r\n`).
#[test]
fn gen_writes_raw_bytes_to_a_serial_port() {
    let dir = TempDir::new("serial-gen");
    let mut pty = Pty::new();
    let link = dir.join("ttyGEN");
    point(&link, &pty.path);
    let url = format!("serial://{} baud=115200", link.display());
    let mut child = command(Features::Auto)
        .args([
            "gen", &url, "--format", "u8", "--signal", "counter", "--rate", "max", "--bytes",
            "4096",
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn gen");
    // The test keeps its own slave descriptor open, so the master never reads EIO: it reads
    // until it has the bytes or the deadline passes.
    let fl = nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let fl = nix::fcntl::OFlag::from_bits_retain(fl) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(fl)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let done = wait_until(TRANSFER_TIMEOUT, || {
        if let Ok(n) = pty.master.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got.len() >= 4096
    });
    let mut status = None;
    wait_until(EXIT_TIMEOUT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        panic!("gen did not exit; {} of 4096 bytes read", got.len());
    };
    assert!(status.success(), "{status}");
    assert!(done, "{} of 4096 bytes", got.len());
    let want: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    assert_same_bytes("the pty master", &got, &want);
}

/// `ringrelay gen pty:///PATH` plays a serial device that is not there: a relay whose serial
/// input names PATH opens it when gen creates it and records every byte; gen's end is an
/// unplug (the link goes, the tty hangs up) and a second gen a replug. (The ARM smoke stage
/// `serial` does the same in a busybox guest.)
#[test]
fn gen_plays_a_serial_device_on_a_pty() {
    let dir = TempDir::new("serial-genpty");
    let link = dir.join("ttyGPS");
    let out = dir.join("gps.raw");
    let url = format!("serial://{}", link.display());
    let (relay, ()) = Relay::start(Features::Auto, &dir, || {
        let conf = format!(
            "{}[channel gps]\ninput = {url} baud=4800\noutput = file://{}\n",
            dir.global_section(),
            out.display()
        );
        (conf, ())
    });
    let gen = |bytes: &str| {
        let pty = format!("pty://{}", link.display());
        let o = output_within(
            command(Features::Auto).args([
                "gen", &pty, "--format", "u8", "--signal", "counter", "--rate", "20000", "--bytes",
                bytes,
            ]),
            "gen to a pty",
            TRANSFER_TIMEOUT,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(!link.exists(), "gen removes its link at the end");
    };
    gen("3000");
    wait_for("the unplug", READY_TIMEOUT, || {
        relay.log().contains(" gone ")
    });
    gen("2000");
    wait_for("the second unplug", READY_TIMEOUT, || {
        count(&relay.log(), " gone ") == 2
    });
    let want: Vec<u8> = (0..3000u32)
        .map(|i| i as u8)
        .chain((0..2000u32).map(|i| i as u8))
        .collect();
    wait_for("every byte in the file", TRANSFER_TIMEOUT, || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() >= want.len() as u64)
    });
    assert_same_bytes("the file", &std::fs::read(&out).unwrap(), &want);
    assert_eq!(count(&relay.log(), "reopened"), 1, "{}", relay.log());
    relay.stop();
}

/// Receives datagrams in a thread and keeps each one whole.
fn datagram_collector(sock: UdpSocket) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        // Ends with the test process.
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                g.lock().unwrap().push(buf[..n].to_vec());
            }
        }
    });
    got
}

/// The sentences of `bytes`, each with its CR LF.
fn split_sentences(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l.to_vec())
        .collect()
}

/// A GPS on a serial port, cut into lines (`framing = line`): written in pieces that split
/// sentences, each sentence leaves as one datagram, byte-exact with its CR LF, before and
/// after the adapter is unplugged and plugged back in behind the same by-id name.
fn nmea_from_a_serial_port_leaves_one_datagram_per_sentence(features: Features) {
    let dir = TempDir::new("serial-nmea");
    let link = dir.join("usb-u-blox_AG_u-blox_7_-_GPS_GNSS_Receiver-if00");
    let mut gps = Pty::new();
    point(&link, &gps.path);
    let udp = UdpSocket::bind((LOCALHOST4, 0)).unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let got = datagram_collector(udp);
    let url = format!("serial://{}", link.display());
    let (mut relay, ()) = Relay::start(features, &dir, || {
        let conf = format!(
            "{}[channel nmea]\ninput = {url} baud=9600\nframing = line\noutput = udp://{udp_addr}\n",
            dir.global_section()
        );
        (conf, ())
    });
    wait_for("the port opened", READY_TIMEOUT, || {
        relay.log().contains(&format!("serial port {url} opened"))
    });
    gps.release_slave();
    let before = sentences(0, 60);
    write_slowly(&mut gps.master, &before);
    let want_before = split_sentences(&before);
    wait_for("the first sentences", TRANSFER_TIMEOUT, || {
        got.lock().unwrap().len() >= want_before.len()
    });

    drop(gps);
    wait_for("the unplug noticed", READY_TIMEOUT, || {
        relay.log().contains(" gone ")
    });
    let mut gps = Pty::new();
    point(&link, &gps.path);
    wait_for("the port reopened", Duration::from_secs(15), || {
        relay.log().contains(&format!("serial port {url} reopened"))
    });
    gps.release_slave();
    let after = sentences(60, 150);
    write_slowly(&mut gps.master, &after);
    let want: Vec<Vec<u8>> = [want_before, split_sentences(&after)].concat();
    wait_for("every sentence", TRANSFER_TIMEOUT, || {
        got.lock().unwrap().len() >= want.len()
    });
    thread::sleep(Duration::from_millis(200));
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), want.len(), "one datagram per sentence");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g,
            w,
            "datagram {i}: {:?} is not sentence {:?}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
    relay.assert_running("after the replug");
    let c = input_counters_line(&relay, "nmea");
    assert_eq!(counter_in(&c, "reconnects"), 1, "{c}");
    relay.stop();
}

/// A serial port that stays open but sends nothing (a GPS that hung) is closed and opened
/// again after `idle_timeout`, logged once and counted; what it sends after that arrives.
fn a_silent_serial_port_is_reopened_after_idle_timeout(features: Features) {
    let dir = TempDir::new("serial-idle");
    let link = dir.join("usb-Prolific_Technology_Inc._USB-Serial_Controller-if00-port0");
    let mut gps = Pty::new();
    point(&link, &gps.path);
    let udp = UdpSocket::bind((LOCALHOST4, 0)).unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let got = datagram_collector(udp);
    let url = format!("serial://{}", link.display());
    let (relay, ()) = Relay::start(features, &dir, || {
        let conf = format!(
            "{}[channel gps]\ninput = {url} baud=4800 idle_timeout=1s\nframing = line\noutput = udp://{udp_addr}\n",
            dir.global_section()
        );
        (conf, ())
    });
    wait_for("the port opened", READY_TIMEOUT, || {
        relay.log().contains(&format!("serial port {url} opened"))
    });
    gps.release_slave();
    wait_for("the idle timeout", Duration::from_secs(10), || {
        relay.log().contains("sent nothing for 1s")
    });
    wait_for("the port reopened", Duration::from_secs(15), || {
        relay.log().contains(&format!("serial port {url} reopened"))
    });
    // The same pty is still there: the reopened port reads what the GPS sends now.
    let s = sentences(0, 5);
    write_slowly(&mut gps.master, &s);
    wait_for("the sentences", TRANSFER_TIMEOUT, || {
        got.lock().unwrap().len() >= 5
    });
    assert_eq!(*got.lock().unwrap(), split_sentences(&s));
    let c = input_counters_line(&relay, "gps");
    assert!(counter_in(&c, "idle_timeouts") >= 1, "{c}");
    let log = relay.log();
    assert_eq!(
        count(&log, "sent nothing for 1s"),
        counter_in(&c, "idle_timeouts") as usize,
        "one line per timeout:\n{log}"
    );
    relay.stop();
}
