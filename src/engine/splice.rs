//! The splice path's pure part: the fill accounting of one channel's pipe. Which channels
//! splice and what `splice = auto | on | off` decides are configuration
//! ([`crate::config::splice`]).
//!
//! Owns: the fan-out rounds ([`Fanout`]) and the
//! [`PipeFill`] state machine that says how many bytes the next splice-in (socket -> pipe) and
//! splice-out (pipe -> socket) may move. It never touches a descriptor or the ring: the splice
//! data path (`engine::splicing`) asks for `IORING_OP_SPLICE` through the ring and is told
//! each completion here.
//!
//! Why a fill counter: a splice of an empty pipe into a socket blocks its io-wq worker until
//! something arrives, and a splice from a socket into a full pipe blocks until the pipe drains.
//! Asking for exactly `cap - fill` in and `fill` out, with one of each in flight and never a
//! length of 0, means neither splice ever waits on the pipe, only on its socket. The two are
//! never linked (IOSQE_IO_LINK): a short splice-in would cancel the linked splice-out.
//!
//! Fan-out (N >= 2 stream links) splices with tee(2) through one pipe per output
//! ([`Fanout`]): tee only ever duplicates from the head of its source and may stop short when
//! the destination lacks free slots, so a distribution round starts only when every output
//! pipe is empty, snapshots the intake pipe's fill, tees exactly that many bytes into outputs
//! 0..N-1 and, once all of them completed with exactly that length, splices it into the last
//! output (which consumes it). Any other result is a broken invariant: the channel fails,
//! never delivers wrong bytes.

/// The fill accounting of one channel's pipe: bytes in it, and which of the two splices is in
/// flight. `cap` is what F_GETPIPE_SZ reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipeFill {
    cap: u32,
    fill: u32,
    filling: bool,
    draining: bool,
}

impl PipeFill {
    pub fn new(cap: u32) -> PipeFill {
        assert!(cap > 0, "a pipe holds at least one page");
        PipeFill {
            cap,
            fill: 0,
            filling: false,
            draining: false,
        }
    }

    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// Bytes in the pipe.
    pub fn fill(&self) -> u32 {
        self.fill
    }

    pub fn is_empty(&self) -> bool {
        self.fill == 0
    }

    /// Neither splice is in flight: the pipe may be closed.
    pub fn idle(&self) -> bool {
        !self.filling && !self.draining
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The length of the next splice-in, if one may start now: none in flight and room.
    pub fn next_in(&self) -> Option<u32> {
        (!self.filling && self.fill < self.cap).then(|| self.cap - self.fill)
    }

    /// The length of the next splice-out, if one may start now: none in flight and bytes.
    pub fn next_out(&self) -> Option<u32> {
        (!self.draining && self.fill > 0).then_some(self.fill)
    }

    /// The length to submit again for the splice-in in flight after it found its socket not
    /// ready (-EAGAIN on a non-blocking socket): the room now.
    pub fn retry_in(&self) -> u32 {
        assert!(self.filling, "no splice-in to retry");
        self.cap - self.fill
    }

    /// The same for the splice-out in flight: the fill now.
    pub fn retry_out(&self) -> u32 {
        assert!(self.draining, "no splice-out to retry");
        self.fill
    }

    /// A splice-in of [`Self::next_in`] bytes was submitted.
    pub fn start_in(&mut self) {
        assert!(self.next_in().is_some(), "splice-in started without room");
        self.filling = true;
    }

    /// A splice-out of [`Self::next_out`] bytes was submitted.
    pub fn start_out(&mut self) {
        assert!(
            self.next_out().is_some(),
            "splice-out started without bytes"
        );
        self.draining = true;
    }

    /// The splice-in completed with `res`: returns the bytes it moved into the pipe (0 for an
    /// error or the producer's FIN). The bytes count whether or not the input is still wanted:
    /// they are in the pipe.
    pub fn done_in(&mut self, res: i32) -> u32 {
        assert!(self.filling, "splice-in completion without one in flight");
        self.filling = false;
        let n = res.max(0) as u32;
        assert!(n <= self.cap - self.fill, "splice-in moved more than asked");
        self.fill += n;
        n
    }

    /// The splice-out completed with `res`: returns the bytes it took out of the pipe.
    pub fn done_out(&mut self, res: i32) -> u32 {
        assert!(self.draining, "splice-out completion without one in flight");
        self.draining = false;
        let n = res.max(0) as u32;
        assert!(n <= self.fill, "splice-out moved more than the pipe held");
        self.fill -= n;
        n
    }
}

/// One distribution round of a fan-out channel: `len` bytes snapshot from the intake pipe,
/// `tees_left` tees still in flight, then the final splice.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Round {
    len: u32,
    tees_left: u32,
    final_in_flight: bool,
    broken: bool,
}

/// The fan-out state of a splicing channel with N >= 2 outputs: the fill of each output's
/// pipe and the distribution round from the intake pipe (P0) into them.
///
/// A round starts only when P0 holds bytes, no round is in flight and every output pipe is
/// empty with no splice on it: then P0's fill is snapshot as `len`, P0 counts as draining (so
/// the splice-in may go on appending after the snapshot), and outputs 0..N-1 each get a tee of
/// `len` (their pipes, empty and at least as large as P0, have room for every buffer P0
/// holds, so a tee never stops short). Only after all tees completed with exactly `len` does
/// the final splice move `len` from P0 into output N-1's pipe. Tees are not linked
/// (IOSQE_IO_LINK): they are counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fanout {
    outs: Vec<PipeFill>,
    round: Option<Round>,
    failed: bool,
}

impl Fanout {
    /// `caps`: each output pipe's capacity, every one at least `p0_cap`.
    pub fn new(p0_cap: u32, caps: &[u32]) -> Fanout {
        assert!(caps.len() >= 2, "fan-out has two or more outputs");
        assert!(
            caps.iter().all(|&c| c >= p0_cap),
            "an output pipe is smaller than the intake pipe"
        );
        Fanout {
            outs: caps.iter().map(|&c| PipeFill::new(c)).collect(),
            round: None,
            failed: false,
        }
    }

    pub fn outputs(&self) -> usize {
        self.outs.len()
    }

    pub fn out(&self, i: usize) -> &PipeFill {
        &self.outs[i]
    }

    pub fn out_mut(&mut self, i: usize) -> &mut PipeFill {
        &mut self.outs[i]
    }

    /// Tees and final splices in flight (the pipes must stay open until it is 0).
    pub fn ops_in_flight(&self) -> usize {
        self.round
            .as_ref()
            .map_or(0, |r| r.tees_left as usize + usize::from(r.final_in_flight))
    }

    /// The length of the round in flight.
    pub fn round_len(&self) -> Option<u32> {
        self.round.as_ref().map(|r| r.len)
    }

    /// A tee or final splice returned something other than its length: no round starts again.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Bytes in the output pipes.
    pub fn out_fill(&self) -> u64 {
        self.outs.iter().map(|o| u64::from(o.fill())).sum()
    }

    /// Nothing in flight and every output pipe empty.
    pub fn is_drained(&self) -> bool {
        self.round.is_none() && self.outs.iter().all(|o| o.is_empty() && o.idle())
    }

    /// Starts a round if one may start (see the type's documentation): returns its length;
    /// the caller then submits a tee of that length into outputs `0..outputs() - 1`.
    pub fn start_round(&mut self, p0: &mut PipeFill) -> Option<u32> {
        if self.failed || self.round.is_some() {
            return None;
        }
        if !self.outs.iter().all(|o| o.is_empty() && o.idle()) {
            return None;
        }
        let len = p0.next_out()?;
        p0.start_out();
        let n = self.outs.len();
        for o in &mut self.outs[..n - 1] {
            o.start_in();
        }
        self.round = Some(Round {
            len,
            tees_left: n as u32 - 1,
            final_in_flight: false,
            broken: false,
        });
        Some(len)
    }

    /// The tee into output `i` completed with `res`. `Ok(Some(len))`: every tee is done, submit
    /// the final splice of `len` into the last output. `Err`: a tee came back short or failed;
    /// the channel must fail (no round starts again).
    pub fn done_tee(&mut self, i: usize, res: i32) -> Result<Option<u32>, String> {
        let n = self.outs.len();
        assert!(
            i < n - 1,
            "the last output gets the final splice, not a tee"
        );
        let r = self.round.as_mut().expect("tee completion without a round");
        assert!(r.tees_left > 0, "more tee completions than tees");
        r.tees_left -= 1;
        let len = r.len;
        self.outs[i].done_in(res);
        let mut why = None;
        if res != len as i32 {
            r.broken = true;
            why = Some(format!("tee into output {i} returned {res}, not {len}"));
        }
        if r.tees_left > 0 {
            return match why {
                Some(w) => {
                    self.failed = true;
                    Err(w)
                }
                None => Ok(None),
            };
        }
        if r.broken {
            self.round = None;
            self.failed = true;
            return Err(why.unwrap_or_else(|| "an earlier tee of this round failed".into()));
        }
        r.final_in_flight = true;
        self.outs[n - 1].start_in();
        Ok(Some(len))
    }

    /// The final splice completed with `res`: the round is over. `Err` when it did not move
    /// exactly the round's length.
    pub fn done_final(&mut self, p0: &mut PipeFill, res: i32) -> Result<u32, String> {
        let n = self.outs.len();
        let r = self
            .round
            .take()
            .expect("final splice completion without a round");
        assert!(
            r.final_in_flight && r.tees_left == 0,
            "final splice out of order"
        );
        p0.done_out(res);
        self.outs[n - 1].done_in(res);
        if res != r.len as i32 {
            self.failed = true;
            return Err(format!(
                "the final splice into output {} returned {res}, not {}",
                n - 1,
                r.len
            ));
        }
        Ok(r.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_asks_for_room_in_and_bytes_out() {
        let mut p = PipeFill::new(100);
        assert_eq!(p.next_out(), None, "never splice out of an empty pipe");
        assert_eq!(p.next_in(), Some(100));
        p.start_in();
        assert_eq!(p.next_in(), None, "one splice-in in flight");
        assert_eq!(p.done_in(60), 60);
        assert_eq!(
            (p.fill(), p.next_in(), p.next_out()),
            (60, Some(40), Some(60))
        );
        p.start_out();
        p.start_in();
        assert!(!p.idle());
        assert_eq!(p.next_out(), None, "one splice-out in flight");
        // The in-flight out asked for 60; the in may add its 40 meanwhile.
        assert_eq!(p.done_in(40), 40);
        assert_eq!(p.next_in(), None, "full: no splice-in of length 0");
        assert_eq!(p.done_out(25), 25);
        assert_eq!(
            (p.fill(), p.next_in(), p.next_out()),
            (75, Some(25), Some(75))
        );
        assert!(p.idle());
    }

    #[test]
    fn errors_and_fin_move_nothing() {
        let mut p = PipeFill::new(10);
        p.start_in();
        assert_eq!(p.done_in(0), 0, "FIN");
        p.start_in();
        assert_eq!(p.done_in(-libc::ECANCELED), 0);
        p.start_in();
        assert_eq!(p.done_in(7), 7);
        p.start_out();
        assert_eq!(
            p.done_out(-libc::EPIPE),
            0,
            "bytes stay for the next connection"
        );
        assert_eq!(p.fill(), 7);
        p.start_out();
        assert_eq!(p.done_out(7), 7);
        assert!(p.is_empty() && p.idle());
    }

    #[test]
    #[should_panic(expected = "more than the pipe held")]
    fn a_splice_out_past_the_fill_is_a_broken_invariant() {
        let mut p = PipeFill::new(10);
        p.start_in();
        p.done_in(4);
        p.start_out();
        p.done_out(5);
    }

    /// Fills P0 with `n` bytes through a splice-in.
    fn fill_in(p0: &mut PipeFill, n: i32) {
        p0.start_in();
        p0.done_in(n);
    }

    #[test]
    fn a_round_tees_then_splices_the_snapshot() {
        let mut p0 = PipeFill::new(100);
        let mut f = Fanout::new(100, &[100, 100, 100]);
        assert_eq!(f.start_round(&mut p0), None, "nothing in P0");
        fill_in(&mut p0, 40);
        assert_eq!(f.start_round(&mut p0), Some(40));
        assert_eq!(f.ops_in_flight(), 2, "two tees");
        assert_eq!(f.start_round(&mut p0), None, "one round at a time");
        // The splice-in goes on after the snapshot.
        assert_eq!(p0.next_in(), Some(60));
        fill_in(&mut p0, 10);
        assert_eq!(f.done_tee(1, 40), Ok(None));
        assert_eq!(f.out(1).fill(), 40);
        assert_eq!(
            f.done_tee(0, 40),
            Ok(Some(40)),
            "all tees in: the final splice"
        );
        assert_eq!(f.ops_in_flight(), 1);
        assert_eq!(f.done_final(&mut p0, 40), Ok(40));
        assert_eq!(f.ops_in_flight(), 0);
        assert_eq!((p0.fill(), f.out(0).fill(), f.out(2).fill()), (10, 40, 40));
        // P0 holds 10 more, but output 0 has not sent its 40 yet.
        assert_eq!(f.start_round(&mut p0), None, "an output pipe is not empty");
        for i in 0..3 {
            let o = f.out_mut(i);
            assert_eq!(o.next_out(), Some(40));
            o.start_out();
            assert_eq!(
                o.done_out(if i == 1 { 15 } else { 40 }),
                if i == 1 { 15 } else { 40 }
            );
        }
        assert_eq!(f.start_round(&mut p0), None, "output 1 still has 25");
        let o = f.out_mut(1);
        o.start_out();
        assert_eq!(
            f.start_round(&mut p0),
            None,
            "output 1's splice is in flight"
        );
        f.out_mut(1).done_out(25);
        assert!(f.is_drained());
        assert_eq!(f.start_round(&mut p0), Some(10));
    }

    #[test]
    fn a_short_tee_fails_the_fan_out() {
        let mut p0 = PipeFill::new(100);
        let mut f = Fanout::new(100, &[100, 100, 100]);
        fill_in(&mut p0, 50);
        assert_eq!(f.start_round(&mut p0), Some(50));
        assert!(f.done_tee(0, 49).is_err(), "short tee");
        assert!(f.failed());
        assert_eq!(f.ops_in_flight(), 1, "the other tee is still counted");
        assert!(
            f.done_tee(1, 50).is_err(),
            "no final splice after a broken round"
        );
        assert_eq!(f.ops_in_flight(), 0, "the pipes may close");
        assert_eq!(f.start_round(&mut p0), None, "no round after a failure");
    }

    #[test]
    fn a_failed_tee_or_short_final_splice_fails_the_fan_out() {
        let mut p0 = PipeFill::new(100);
        let mut f = Fanout::new(100, &[100, 100]);
        fill_in(&mut p0, 30);
        assert_eq!(f.start_round(&mut p0), Some(30));
        assert!(f.done_tee(0, -libc::EAGAIN).is_err());
        assert_eq!(f.ops_in_flight(), 0);
        let mut p0 = PipeFill::new(100);
        let mut f = Fanout::new(100, &[100, 100]);
        fill_in(&mut p0, 30);
        f.start_round(&mut p0);
        assert_eq!(f.done_tee(0, 30), Ok(Some(30)));
        assert!(f.done_final(&mut p0, 29).is_err());
        assert!(f.failed() && f.ops_in_flight() == 0);
        assert_eq!(f.start_round(&mut p0), None);
    }

    #[test]
    #[should_panic(expected = "smaller than the intake pipe")]
    fn an_output_pipe_smaller_than_the_intake_is_refused() {
        Fanout::new(100, &[100, 99]);
    }

    proptest::proptest! {
        /// Over any interleaving of splice-ins, round steps and output splice-outs, every
        /// output ends up with exactly the bytes that entered P0, none twice.
        #[test]
        fn every_output_gets_every_byte(
            n in 2usize..5,
            steps in proptest::collection::vec((0u8..4, 0u32..200, 0usize..5), 1..300),
        ) {
            let mut p0 = PipeFill::new(100);
            let mut f = Fanout::new(100, &vec![100; n]);
            let mut moved_in = 0u64;
            let mut out = vec![0u64; n];
            let mut tees: Vec<usize> = Vec::new();
            let mut final_len = None;
            // One step of the round in flight: a tee (each returns its length), or the final
            // splice once all tees are in.
            let step = |f: &mut Fanout, p0: &mut PipeFill, tees: &mut Vec<usize>, fl: &mut Option<u32>| {
                if let Some(t) = tees.pop() {
                    let len = f.round_len().expect("a round") as i32;
                    if let Some(l) = f.done_tee(t, len).expect("exact tee") {
                        *fl = Some(l);
                    }
                } else if let Some(l) = fl.take() {
                    f.done_final(p0, l as i32).expect("exact splice");
                }
            };
            for (op, r, i) in steps {
                match op {
                    0 => if let Some(k) = p0.next_in() {
                        p0.start_in();
                        moved_in += u64::from(p0.done_in((r % (k + 1)) as i32));
                    },
                    1 => if f.start_round(&mut p0).is_some() {
                        tees = (0..n - 1).collect();
                    },
                    2 => step(&mut f, &mut p0, &mut tees, &mut final_len),
                    _ => {
                        let o = f.out_mut(i % n);
                        if let Some(k) = o.next_out() {
                            o.start_out();
                            out[i % n] += u64::from(o.done_out((r % (k + 1)) as i32));
                        }
                    }
                }
                for (k, got) in out.iter().enumerate() {
                    proptest::prop_assert!(*got + u64::from(f.out(k).fill()) <= moved_in);
                }
            }
            // Finish the round in flight, then run rounds and outputs dry.
            while f.ops_in_flight() > 0 {
                step(&mut f, &mut p0, &mut tees, &mut final_len);
            }
            loop {
                for (k, got) in out.iter_mut().enumerate() {
                    let o = f.out_mut(k);
                    if let Some(m) = o.next_out() {
                        o.start_out();
                        *got += u64::from(o.done_out(m as i32));
                    }
                }
                if f.start_round(&mut p0).is_none() {
                    break;
                }
                tees = (0..n - 1).collect();
                while f.ops_in_flight() > 0 {
                    step(&mut f, &mut p0, &mut tees, &mut final_len);
                }
            }
            proptest::prop_assert_eq!(p0.fill(), 0);
            proptest::prop_assert!(f.is_drained());
            for got in out {
                proptest::prop_assert_eq!(got, moved_in);
            }
        }
    }

    proptest::proptest! {
        /// Over any interleaving of starts and completions of the two splices, bytes in =
        /// bytes out + fill, and fill never leaves 0..=cap.
        #[test]
        fn conserves_bytes(
            cap in 1u32..5000,
            steps in proptest::collection::vec((0u8..4, 0u32..6000), 1..300),
        ) {
            let mut p = PipeFill::new(cap);
            let (mut moved_in, mut moved_out) = (0u64, 0u64);
            let (mut asked_in, mut asked_out) = (None, None);
            for (op, r) in steps {
                match op {
                    0 => if let Some(n) = p.next_in() { p.start_in(); asked_in = Some(n); },
                    1 => if let Some(n) = p.next_out() { p.start_out(); asked_out = Some(n); },
                    2 => if let Some(n) = asked_in.take() {
                        moved_in += u64::from(p.done_in((r % (n + 1)) as i32));
                    },
                    _ => if let Some(n) = asked_out.take() {
                        moved_out += u64::from(p.done_out((r % (n + 1)) as i32));
                    },
                }
                proptest::prop_assert!(p.fill() <= cap);
                proptest::prop_assert_eq!(moved_in, moved_out + u64::from(p.fill()));
            }
        }
    }
}
