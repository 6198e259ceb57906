//! The state of one `mqtt://` output across its connections: where the session stands
//! (connected, waiting for CONNACK, publishing), and the books of QoS 1.
//!
//! Owns: cutting queued chunks into messages ([`cut`]), packet ids, and the one list of
//! messages handed to the broker ([`Session::unacked`]). Pure: no I/O, no clock reads (times
//! are passed in), no buffer references taken or released (the caller does that with the
//! byte counts returned here).
//!
//! Every message stays in its output's queue until it is done with: the queue's front bytes
//! are exactly the messages of `unacked`, in order, followed by those not yet published. A
//! message is *done* when
//! - QoS 0: the write that carried it completed (it was written and is forgotten), or that
//!   write's connection was lost first (the message is dropped, counted: it may or may not
//!   have reached the broker);
//! - QoS 1: its PUBACK arrived ("acknowledged"). At a disconnect, every QoS 1 message not yet
//!   acknowledged ([`Session::not_acknowledged`]) stays, marked to be re-sent first on the
//!   next connection with DUP set (each re-send counted as a duplicate).
//!
//! Done messages leave the front of the queue together ([`Session::pop_done`]). So the queue's
//! `max_backlog`, buffer quota and `on_slow` cover unacknowledged messages too, and a spool
//! hooked to this output later finds what is not acknowledged in one place.

use super::outq::Chunk;
use std::collections::VecDeque;
use std::time::Instant;

/// Where a connection of the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No connection (dialing, or waiting out a backoff).
    Down,
    /// Connected; CONNECT not yet written.
    Connected,
    /// CONNECT written; waiting for CONNACK.
    AwaitConnAck,
    /// Accepted: publishing.
    Ready,
}

/// How a queued chunk is cut into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// One message per chunk (a datagram, or one u32be record without its prefix).
    Whole,
    /// One message per line, its `\n` (and a `\r` before it) left out.
    Lines,
    /// Pieces of at most this many bytes (fixed frames, or an unframed stream).
    Pieces(u32),
}

/// Cuts `c` (whose bytes are `data`) into messages: (bytes of the queue it takes, payload).
pub fn cut(c: Chunk, data: &[u8], how: Cut, out: &mut Vec<(u32, Chunk)>) {
    match how {
        Cut::Whole => out.push((c.len, c)),
        Cut::Pieces(n) => {
            let n = n.max(1);
            let mut at = 0;
            while at < c.len {
                let len = n.min(c.len - at);
                out.push((
                    len,
                    Chunk {
                        buf: c.buf,
                        off: c.off + at,
                        len,
                    },
                ));
                at += len;
            }
        }
        Cut::Lines => {
            let mut start = 0usize;
            while start < data.len() {
                let end = data[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |i| start + i + 1);
                let mut body = &data[start..end];
                body = body.strip_suffix(b"\n").unwrap_or(body);
                body = body.strip_suffix(b"\r").unwrap_or(body);
                out.push((
                    (end - start) as u32,
                    Chunk {
                        buf: c.buf,
                        off: c.off + start as u32,
                        len: body.len() as u32,
                    },
                ));
                start = end;
            }
        }
    }
}

/// One message handed to the broker (or about to be), in queue order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Bytes of the queue it stands for (its payload, and a line's end).
    pub span: u32,
    pub payload: Chunk,
    /// Its packet id (QoS 1), else 0.
    pub id: u16,
    /// Done with: it leaves the queue at the next [`Session::pop_done`].
    pub done: bool,
    /// In the write in flight.
    pub writing: bool,
    /// Written on some connection before (a re-send carries DUP).
    pub sent: bool,
    /// To be written (again) on the current connection.
    pub due: bool,
}

/// Counters of an MQTT output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqttStats {
    /// Messages written to a broker, each once.
    pub published: u64,
    /// QoS 1 messages the broker acknowledged (PUBACK).
    pub acknowledged: u64,
    /// QoS 1 messages written again after a reconnect (DUP set).
    pub duplicates: u64,
    /// CONNECTs the broker refused (a CONNACK with a non-zero return code).
    pub refused: u64,
    /// QoS 0 messages whose connection was lost under their write (counted in `drops` too).
    pub lost: u64,
}

/// One output's session.
#[derive(Debug)]
pub struct Session {
    pub phase: Phase,
    pub qos1: bool,
    pub max_inflight: usize,
    pub how: Cut,
    /// The messages at the queue's front, in order (see the module doc).
    pub unacked: VecDeque<Message>,
    /// Queue bytes `unacked` stands for.
    pub covered: u64,
    next_id: u16,
    /// Broker bytes not yet decoded.
    pub rx: Vec<u8>,
    /// When the last write of the current connection was submitted.
    pub last_write: Option<Instant>,
    /// A PINGREQ is wanted (nothing was written for the keepalive period).
    pub ping_wanted: bool,
    /// When the PINGREQ waiting for its PINGRESP was written.
    pub ping_sent: Option<Instant>,
    /// When CONNECT was written.
    pub connect_sent: Option<Instant>,
    /// The last refusal logged (a CONNACK code), so each is logged once per change.
    pub last_refusal: Option<u8>,
    /// DISCONNECT written at a clean stop (the broker's FIN that follows is no fault).
    pub bye: bool,
    /// A write of this session is in flight (on the current or an old connection).
    pub writing: bool,
    pub stats: MqttStats,
}

impl Session {
    pub fn new(qos1: bool, max_inflight: u16, how: Cut) -> Session {
        Session {
            phase: Phase::Down,
            qos1,
            max_inflight: usize::from(max_inflight),
            how,
            unacked: VecDeque::new(),
            covered: 0,
            next_id: 0,
            rx: Vec::new(),
            last_write: None,
            ping_wanted: false,
            ping_sent: None,
            connect_sent: None,
            last_refusal: None,
            bye: false,
            writing: false,
            stats: MqttStats::default(),
        }
    }

    /// QoS 1 messages written and not acknowledged, or waiting to be written again.
    pub fn in_flight(&self) -> usize {
        self.unacked.iter().filter(|m| !m.done).count()
    }

    /// Whether another QoS 1 message may be published now.
    pub fn has_room(&self) -> bool {
        !self.qos1 || self.in_flight() < self.max_inflight
    }

    /// A free packet id (1..=65535, none in use).
    fn fresh_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            let id = self.next_id;
            if !self.unacked.iter().any(|m| !m.done && m.id == id) {
                return id;
            }
        }
    }

    /// Takes a new message (`span` queue bytes, `payload`) for the next write.
    pub fn add(&mut self, span: u32, payload: Chunk) -> Message {
        let id = if self.qos1 { self.fresh_id() } else { 0 };
        let m = Message {
            span,
            payload,
            id,
            // An empty line is nothing to publish: done at once.
            done: payload.len == 0,
            writing: payload.len > 0,
            sent: false,
            due: false,
        };
        self.unacked.push_back(m);
        self.covered += u64::from(span);
        m
    }

    /// The write in flight completed whole: its QoS 0 messages are done, its QoS 1 messages
    /// wait for their PUBACK.
    pub fn written(&mut self) {
        let qos1 = self.qos1;
        for m in self.unacked.iter_mut().filter(|m| m.writing) {
            m.writing = false;
            if !m.sent {
                self.stats.published += 1;
            }
            m.sent = true;
            if !qos1 {
                m.done = true;
            }
        }
    }

    /// A PUBACK for `id`: returns whether a message waited for it. The PUBACK may come
    /// before the completion of the write that carried the PUBLISH (the two completions are
    /// not ordered): a message in the write in flight is acknowledged all the same.
    pub fn acknowledged(&mut self, id: u16) -> bool {
        let Some(m) = self
            .unacked
            .iter_mut()
            .find(|m| !m.done && m.id == id && (m.sent || m.writing))
        else {
            return false;
        };
        m.done = true;
        self.stats.acknowledged += 1;
        true
    }

    /// The connection is gone: what it had not finished with. QoS 0 messages in a write that
    /// had not completed are dropped (returned: how many); QoS 1 messages not yet acknowledged
    /// are due again on the next connection.
    pub fn disconnected(&mut self) -> u64 {
        self.phase = Phase::Down;
        self.rx.clear();
        self.ping_wanted = false;
        self.ping_sent = None;
        self.connect_sent = None;
        self.last_write = None;
        let mut lost = 0;
        let qos1 = self.qos1;
        for m in self.unacked.iter_mut().filter(|m| !m.done) {
            if m.writing && !m.sent {
                // Handed to the kernel: it may have reached the broker, so a re-send is a
                // duplicate (DUP set, counted).
                m.sent = true;
                self.stats.published += 1;
            }
            m.writing = false;
            if qos1 {
                m.due = true;
            } else {
                m.done = true;
                lost += 1;
            }
        }
        self.stats.lost += lost;
        lost
    }

    /// The stop's deadline came first (`shutdown_timeout`): every message not done with is
    /// given up, done at once. Returns how many (the caller counts them as drops: a QoS 1
    /// message without its PUBACK may or may not have reached the broker).
    pub fn give_up(&mut self) -> u64 {
        let mut n = 0;
        for m in self.unacked.iter_mut().filter(|m| !m.done) {
            m.done = true;
            m.due = false;
            n += 1;
        }
        n
    }

    /// Every message is let go of without being done (the queue bytes they stood for went
    /// to a spool, which sends them again later): nothing is held, nothing counted.
    pub fn forget(&mut self) {
        self.unacked.clear();
        self.covered = 0;
    }

    /// The QoS 1 messages not acknowledged (the ones a disconnect leaves to re-send).
    pub fn not_acknowledged(&self) -> impl Iterator<Item = &Message> {
        self.unacked.iter().filter(|m| !m.done)
    }

    /// Done messages at the front leave: returns the queue bytes they stood for.
    pub fn pop_done(&mut self) -> u64 {
        let mut n = 0;
        while self.unacked.front().is_some_and(|m| m.done) {
            let m = self.unacked.pop_front().expect("present");
            n += u64::from(m.span);
        }
        self.covered -= n;
        n
    }

    /// Nothing left to publish or acknowledge, and nothing in flight.
    pub fn settled(&self) -> bool {
        self.unacked.is_empty() && !self.writing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::spool;

    fn chunk(off: u32, len: u32) -> Chunk {
        Chunk { buf: 7, off, len }
    }

    /// Messages as `cut` gives them: (bytes of the queue, payload).
    type Messages = Vec<(u32, Chunk)>;

    /// The messages of `data` cut live as one chunk, and cut again after the spool stored it
    /// as records of at most `most` bytes (`spool::piece_len`), each replayed as a chunk.
    fn live_and_replayed(
        data: &[u8],
        most: u32,
        how: Cut,
        spool: spool::Cut,
    ) -> (Messages, Messages) {
        let mut live = Vec::new();
        cut(chunk(0, data.len() as u32), data, how, &mut live);
        let mut replayed = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let n = spool::piece_len(spool, &data[at..], most) as usize;
            assert!(n > 0 && n <= most as usize);
            let piece = &data[at..at + n];
            cut(chunk(at as u32, n as u32), piece, how, &mut replayed);
            at += n;
        }
        (live, replayed)
    }

    #[test]
    fn replay_publishes_the_messages_a_chunk_made_live() {
        // Lines: spool records end after a `\n`.
        let data: Vec<u8> = (0..500)
            .flat_map(|i| format!("{i}:{}\n", "x".repeat(i % 13)).into_bytes())
            .collect();
        let (live, replayed) = live_and_replayed(&data, 100, Cut::Lines, spool::Cut::Lines);
        assert_eq!(replayed, live);
        // An unframed stream's max_message pieces (`spooling::cut_of`: frames of max_message).
        let data = vec![0u8; 4096];
        for n in [1, 7, 1000, 4088] {
            let (live, replayed) =
                live_and_replayed(&data, 4088, Cut::Pieces(n), spool::Cut::Frames(n));
            assert_eq!(replayed, live, "max_message {n}");
        }
        // Cut anywhere, the last piece of 4,088 bytes would be two messages (88 and 8 bytes).
        let (live, replayed) =
            live_and_replayed(&data, 4088, Cut::Pieces(1000), spool::Cut::Anywhere);
        assert_ne!(replayed, live);
    }

    #[test]
    fn lines_lose_their_ends_and_keep_their_span() {
        let data = b"$GPGGA,1\r\n\nlast";
        let mut out = Vec::new();
        cut(chunk(100, data.len() as u32), data, Cut::Lines, &mut out);
        assert_eq!(
            out,
            [(10, chunk(100, 8)), (1, chunk(110, 0)), (4, chunk(111, 4))]
        );
        let total: u32 = out.iter().map(|m| m.0).sum();
        assert_eq!(total as usize, data.len());
    }

    #[test]
    fn pieces_and_whole() {
        let mut out = Vec::new();
        cut(chunk(0, 10), &[0; 10], Cut::Pieces(4), &mut out);
        assert_eq!(out, [(4, chunk(0, 4)), (4, chunk(4, 4)), (2, chunk(8, 2))]);
        out.clear();
        cut(chunk(4, 10), &[0; 10], Cut::Whole, &mut out);
        assert_eq!(out, [(10, chunk(4, 10))]);
    }

    #[test]
    fn qos1_keeps_messages_until_their_puback_and_resends_after_a_disconnect() {
        let mut s = Session::new(true, 2, Cut::Whole);
        let a = s.add(5, chunk(0, 5));
        let b = s.add(3, chunk(5, 3));
        assert!(!s.has_room());
        assert_ne!(a.id, b.id);
        s.written();
        assert_eq!(s.stats.published, 2);
        // PUBACKs out of order: nothing leaves until the front is done.
        assert!(s.acknowledged(b.id));
        assert_eq!(s.pop_done(), 0);
        assert!(!s.acknowledged(b.id), "a second PUBACK finds nothing");
        // A PUBACK that overtakes its write's completion counts.
        let c = s.add(1, chunk(8, 1));
        assert!(s.acknowledged(c.id));
        s.written();
        assert_eq!(s.stats.published, 3);
        assert_eq!(s.disconnected(), 0);
        let due: Vec<u16> = s.not_acknowledged().map(|m| m.id).collect();
        assert_eq!(due, [a.id]);
        assert!(s.unacked[0].due && s.unacked[0].sent);
        assert!(s.acknowledged(a.id));
        assert_eq!(s.pop_done(), 9);
        assert!(s.settled());
        assert_eq!(s.covered, 0);
    }

    #[test]
    fn qos0_is_done_when_written_and_lost_with_its_connection() {
        let mut s = Session::new(false, 1, Cut::Whole);
        s.add(5, chunk(0, 5));
        s.add(5, chunk(5, 5));
        assert!(s.has_room(), "QoS 0 has no in-flight limit");
        s.written();
        assert_eq!(s.pop_done(), 10);
        s.add(4, chunk(10, 4));
        assert_eq!(s.disconnected(), 1);
        assert_eq!(s.pop_done(), 4);
        // Handed to the kernel, so published; and lost with its connection, counted.
        assert_eq!((s.stats.published, s.stats.lost), (3, 1));
    }

    #[test]
    fn a_deadline_gives_up_what_is_not_acknowledged() {
        let mut s = Session::new(true, 4, Cut::Whole);
        let a = s.add(5, chunk(0, 5));
        s.add(3, chunk(5, 3));
        s.add(2, chunk(8, 2));
        s.written();
        assert!(s.acknowledged(a.id));
        assert_eq!(s.disconnected(), 0);
        // Two wait to be re-sent when the deadline comes: both given up, none twice.
        assert_eq!(s.give_up(), 2);
        assert_eq!(s.give_up(), 0);
        assert_eq!(s.pop_done(), 10);
        assert!(s.settled());
        assert_eq!(s.stats.acknowledged, 1);
    }

    #[test]
    fn a_spilled_session_forgets_its_messages_uncounted() {
        let mut s = Session::new(true, 4, Cut::Whole);
        s.add(5, chunk(0, 5));
        s.add(3, chunk(5, 3));
        s.written();
        s.forget();
        assert!(s.unacked.is_empty() && s.covered == 0);
        assert_eq!(s.pop_done(), 0);
        assert_eq!((s.stats.published, s.stats.acknowledged), (2, 0));
        assert!(!s.acknowledged(1), "a late PUBACK finds nothing");
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_use() {
        let mut s = Session::new(true, 10, Cut::Whole);
        s.next_id = u16::MAX - 1;
        let a = s.add(1, chunk(0, 1));
        let b = s.add(1, chunk(1, 1));
        assert_eq!((a.id, b.id), (u16::MAX, 1));
        s.next_id = u16::MAX - 1;
        let c = s.add(1, chunk(2, 1));
        assert_eq!(c.id, 2, "65535 and 1 are in use");
    }
}
