//! A simulated MQTT broker: the peer of a simulated `mqtt://` output's connection.
//!
//! It parses what the relay wrote (CONNECT, PUBLISH, PINGREQ, DISCONNECT; anything else or a
//! malformed packet is a violation), answers CONNECT with CONNACK (accepted, or refused with
//! the code the world set), PINGREQ with PINGRESP, and keeps each QoS 1 PUBLISH's PUBACK until
//! the world releases it ([`BrokerConn::release`]: some at once, some late, some never when the
//! connection is dropped first; once the world is calm, at once, as a healthy broker does:
//! [`BrokerConn::prompt`]). The messages it received are kept, with their payload's stream
//! positions, for the end checks.
//!
//! What the relay cannot tell apart, the checks must not either: a QoS 1 message whose PUBACK
//! the relay never read may have reached the broker (its PUBACK was lost with the
//! connection), or not (it was still in the relay's socket buffer, or on the wire, when the
//! connection went: the write had completed all the same). So at the end, each connection
//! keeps only the messages it acknowledged and a prefix of those it had not
//! ([`BrokerConn::kept`]): the rest was lost in transit, as TCP loses a suffix of a dead
//! connection's stream. A relay that lets a message go before its PUBACK loses it there.

use super::kernel::Pos;
use ringrelay::engine::buffers::BufId;
use std::collections::VecDeque;

/// A payload to resolve into positions: its bytes' buffer, offset and length.
pub struct Payload {
    pub buf: BufId,
    pub off: u32,
    pub len: u32,
    pub dup: bool,
}

#[derive(Debug, Default)]
pub struct BrokerConn {
    /// Bytes the relay wrote, and where each came from (buffer, offset).
    wire: Vec<u8>,
    src: Vec<(BufId, u32)>,
    parsed: usize,
    /// The CONNACK return code to answer with (0: accept).
    pub refuse: u8,
    pub accepted: bool,
    /// Bytes toward the relay.
    pub out: VecDeque<u8>,
    /// PUBACKs owed, oldest first.
    pub acks: VecDeque<u16>,
    /// Messages received: payload positions and the DUP flag.
    pub msgs: Vec<(Vec<Pos>, bool)>,
    /// DISCONNECT came.
    pub bye: bool,
    /// Each PUBACK goes out as soon as its PUBLISH is parsed (a calm world).
    pub prompt: bool,
}

impl BrokerConn {
    /// A fresh connection's broker, answering CONNECT with `refuse` (0: accept).
    pub fn new(refuse: u8) -> BrokerConn {
        BrokerConn {
            refuse,
            ..BrokerConn::default()
        }
    }

    /// Takes bytes the relay wrote; returns the payloads of the PUBLISHes now complete, or a
    /// protocol violation.
    pub fn take(&mut self, bytes: &[u8], src: &[(BufId, u32)]) -> Result<Vec<Payload>, String> {
        self.wire.extend_from_slice(bytes);
        self.src.extend_from_slice(src);
        let mut out = Vec::new();
        loop {
            let w = &self.wire[self.parsed..];
            if w.len() < 2 {
                break;
            }
            let (mut len, mut i, mut mult) = (0usize, 1usize, 1usize);
            loop {
                let Some(&b) = w.get(i) else {
                    return Ok(out);
                };
                len += usize::from(b & 0x7f) * mult;
                mult *= 128;
                i += 1;
                if b & 0x80 == 0 {
                    break;
                }
                if i == 5 {
                    return Err("a PUBLISH length over four bytes".into());
                }
            }
            if w.len() < i + len {
                break;
            }
            let b0 = w[0];
            let body = self.parsed + i..self.parsed + i + len;
            match b0 >> 4 {
                1 => {
                    if self.accepted {
                        return Err("a second CONNECT on one connection".into());
                    }
                    self.accepted = self.refuse == 0;
                    self.out.extend([0x20, 2, 0, self.refuse]);
                }
                3 if self.accepted => {
                    let qos = (b0 >> 1) & 3;
                    let dup = b0 & 8 != 0;
                    let w = &self.wire;
                    let tlen = usize::from(u16::from_be_bytes([w[body.start], w[body.start + 1]]));
                    let mut p = body.start + 2 + tlen;
                    if qos == 1 {
                        let id = u16::from_be_bytes([w[p], w[p + 1]]);
                        if id == 0 {
                            return Err("a QoS 1 PUBLISH with packet id 0".into());
                        }
                        self.acks.push_back(id);
                        if self.prompt {
                            self.release(usize::MAX);
                        }
                        p += 2;
                    } else if qos != 0 || dup {
                        return Err(format!("a PUBLISH with first byte {b0:#04x}"));
                    }
                    if p >= body.end {
                        return Err("an empty PUBLISH".into());
                    }
                    let (buf, off) = self.src[p];
                    let n = body.end - p;
                    let contiguous = (0..n).all(|k| self.src[p + k] == (buf, off + k as u32));
                    if !contiguous {
                        return Err("a PUBLISH payload not from one buffer range".into());
                    }
                    out.push(Payload {
                        buf,
                        off,
                        len: n as u32,
                        dup,
                    });
                }
                12 if self.accepted && len == 0 => self.out.extend([0xd0, 0]),
                14 if len == 0 => self.bye = true,
                _ => {
                    return Err(format!(
                        "an unexpected packet (first byte {b0:#04x}, {len} bytes; accepted: {})",
                        self.accepted
                    ))
                }
            }
            self.parsed = body.end;
        }
        Ok(out)
    }

    /// The messages this connection keeps once it is over, if `forget` of those whose
    /// PUBACK it still owed never reached it (the last ones: TCP loses a suffix). On a QoS 1
    /// output every message owes a PUBACK, and they are owed in order, so the owed ones are the
    /// last `acks.len()` messages.
    pub fn kept(&self, forget: usize) -> &[(Vec<Pos>, bool)] {
        &self.msgs[..self.msgs.len() - forget.min(self.acks.len())]
    }

    /// Sends up to `n` owed PUBACKs.
    pub fn release(&mut self, n: usize) {
        for _ in 0..n {
            let Some(id) = self.acks.pop_front() else {
                return;
            };
            self.out.extend([0x40, 2]);
            self.out.extend(id.to_be_bytes());
        }
    }
}
