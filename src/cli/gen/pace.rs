//! Pacing for `ringrelay gen`: the loop that builds each packet (header, then whole frames)
//! and sends it when it is due.
//!
//! Owns: the validated plan of a run ([`Plan`]), packet headers ([`packet_header`]), the due
//! time of each packet, the limits that end a run (frames, duration, the stop flag) and its
//! counters ([`Sent`]).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::signal::Synth;
use super::target::{Conn, Halt, POLL};

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub frames: u64,
    /// Bytes handed to the socket, headers included.
    pub bytes: u64,
    pub packets: u64,
}

/// The validated plan of a run.
pub(super) struct Plan {
    pub(super) synth: Synth,
    /// Frames per second, `None` for as fast as possible.
    pub(super) pace: Option<f64>,
    pub(super) frames_per_packet: usize,
    pub(super) header_bytes: usize,
    pub(super) max_frames: Option<u64>,
    pub(super) duration: Option<Duration>,
}

/// Writes the `header_bytes`-long header of packet `counter`: the big-endian counter, then
/// zeros (or only its low bytes when the header is shorter than 8 bytes).
pub fn packet_header(counter: u64, header_bytes: usize, out: &mut Vec<u8>) {
    let be = counter.to_be_bytes();
    if header_bytes < 8 {
        out.extend_from_slice(&be[8 - header_bytes..]);
    } else {
        out.extend_from_slice(&be);
        out.resize(out.len() + header_bytes - 8, 0);
    }
}

/// Sends packets until a limit is reached or `stop` is set.
pub(super) fn send_loop(
    p: &Plan,
    conn: &mut Conn,
    stop: &AtomicBool,
    start: Instant,
) -> Result<Sent, io::Error> {
    let deadline = p.duration.map(|d| start + d);
    let mut sent = Sent::default();
    let mut buf = Vec::with_capacity(p.header_bytes + p.frames_per_packet * p.synth.frame_bytes());
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut n = p.frames_per_packet as u64;
        if let Some(m) = p.max_frames {
            n = n.min(m - sent.frames);
        }
        if n == 0 {
            break;
        }
        let now = Instant::now();
        if let Some(r) = p.pace {
            let due = start + Duration::from_secs_f64(sent.frames as f64 / r);
            if deadline.is_some_and(|d| due >= d) {
                break;
            }
            if due > now {
                // Sleep in short steps so a signal stops us promptly.
                std::thread::sleep((due - now).min(POLL));
                continue;
            }
        } else if deadline.is_some_and(|d| now >= d) {
            break;
        }
        buf.clear();
        if p.header_bytes > 0 {
            packet_header(sent.packets, p.header_bytes, &mut buf);
        }
        p.synth.fill(sent.frames, n as usize, &mut buf);
        match conn.send(&buf, stop, deadline) {
            Ok(()) => {}
            Err(Halt::Stopped) => break,
            Err(Halt::Failed(e)) => return Err(e),
        }
        sent.frames += n;
        sent.bytes += buf.len() as u64;
        sent.packets += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_a_big_endian_counter() {
        let mut h = Vec::new();
        packet_header(0x0102, 12, &mut h);
        assert_eq!(h, vec![0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0]);
        h.clear();
        packet_header(0x0102_0304, 2, &mut h);
        assert_eq!(h, vec![3, 4]);
    }
}
