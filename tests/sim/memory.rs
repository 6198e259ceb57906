//! The buffer arena as the simulated kernel sees it, and the copies the engine makes in it.
//!
//! A channel that cuts records copies bytes from one pool buffer into another (the carry of a
//! record that straddles two reads, the preamble it keeps): the kernel never filled those
//! buffers, so it must learn where their bytes came from to check what the outputs receive.
//! [`SimMemory`] remembers the engine's last read of the arena; a write of exactly those bytes
//! is a copy, and [`SimMemory::settle`] hands each copy's provenance to the kernel
//! (`Kernel::prov`). Other engine writes (a u32be prefix, a `\n` after a datagram) are left
//! to the kernel's own checks.

use super::kernel::{Kernel, Prov};
use ringrelay::engine::buffers::{BufId, BufferPool, VecMemory};
use ringrelay::engine::io::Memory;
use ringrelay::engine::spoolfmt::RECORD_HEADER;
use std::cell::Cell;

/// One copy: `len` bytes from `src` at `src_off` to `dst` at `dst_off`; with `staged`, the
/// write was a spool record: `staged` bytes the engine made (its header), then the copy. Two
/// more shapes come from a spool's staging ([`Memory::copy`]): `len` 0 is a header's `staged`
/// bytes alone, and `staged` `u32::MAX` is a payload copied after its header.
#[derive(Clone, Copy, Debug)]
struct Copied {
    dst: BufId,
    dst_off: u32,
    src: BufId,
    src_off: u32,
    len: u32,
    staged: u32,
}

pub struct SimMemory {
    pub inner: VecMemory,
    last_read: Cell<Option<(BufId, u32, u32)>>,
    copies: Vec<Copied>,
    /// Writes of engine-made bytes this step that were not copies: a spool record's header
    /// when a [`Memory::copy`] of its payload follows (the spool writes the header, then copies
    /// the payload straight from the input's buffer, either possibly split across two staged
    /// buffers). Forgotten at [`SimMemory::settle`].
    made: Vec<(BufId, u32, u32)>,
}

impl SimMemory {
    pub fn new(pool: &BufferPool) -> SimMemory {
        SimMemory {
            inner: VecMemory::new(pool),
            last_read: Cell::new(None),
            copies: Vec::new(),
            made: Vec::new(),
        }
    }

    /// Gives the kernel the provenance of every copy since the last call: a copy to offset 0
    /// starts a buffer's provenance; a copy further on must continue it (consecutive stream
    /// positions), or it is a violation.
    pub fn settle(&mut self, k: &mut Kernel) {
        self.made.clear();
        for c in self.copies.drain(..) {
            if c.len == 0 {
                // A spool record's header: engine-made bytes, no origin.
                k.staged_made(c.dst, c.dst_off, c.staged);
                continue;
            }
            if c.staged == u32::MAX {
                // A staged record's payload (or part of it), copied after its header.
                k.staged(c.dst, c.dst_off, c.len, (c.src, c.src_off, c.len));
                continue;
            }
            if c.staged > 0 {
                k.staged(
                    c.dst,
                    c.dst_off,
                    c.staged + c.len,
                    (c.src, c.src_off, c.len),
                );
                continue;
            }
            let Some(Prov::Stream { at, pos }) = k.prov[usize::from(c.src)] else {
                k.violations.push(format!(
                    "the engine copied from buffer {} that holds no stream",
                    c.src
                ));
                continue;
            };
            let from = pos + u64::from(c.src_off - at);
            if c.dst_off == 0 {
                k.pieces[usize::from(c.dst)] = None;
                k.prov[usize::from(c.dst)] = Some(Prov::Stream { at: 0, pos: from });
                continue;
            }
            match k.prov[usize::from(c.dst)] {
                Some(Prov::Stream { at, pos }) if pos + u64::from(c.dst_off - at) == from => {}
                p => k.violations.push(format!(
                    "the engine appended position {from} at byte {} of buffer {} ({p:?}): not consecutive",
                    c.dst_off, c.dst
                )),
            }
        }
    }
}

impl Memory for SimMemory {
    fn bytes(&self, buf: BufId, off: u32, len: u32) -> &[u8] {
        self.last_read.set(Some((buf, off, len)));
        self.inner.bytes(buf, off, len)
    }

    fn write(&mut self, buf: BufId, off: u32, data: &[u8]) {
        let mut copy = None;
        if let Some((src, src_off, len)) = self.last_read.get() {
            if len as usize == data.len()
                && src != buf
                && self.inner.bytes(src, src_off, len) == data
            {
                copy = Some((src, src_off, len, 0));
            } else if len > 0
                && data.len() == RECORD_HEADER + len as usize
                && src != buf
                && self.inner.bytes(src, src_off, len) == &data[RECORD_HEADER..]
            {
                // A spool record: its header, then the payload just read.
                copy = Some((src, src_off, len, RECORD_HEADER as u32));
            }
        }
        match copy {
            Some((src, src_off, len, staged)) => self.copies.push(Copied {
                dst: buf,
                dst_off: off,
                src,
                src_off,
                len,
                staged,
            }),
            None => self.made.push((buf, off, data.len() as u32)),
        }
        self.inner.write(buf, off, data);
    }

    /// Only a spool's staging copies bytes buffer to buffer: the payload of a record whose
    /// header was just written (this step's engine-made writes are that header).
    fn copy(&mut self, from: BufId, off: u32, len: u32, to: BufId, to_off: u32) {
        // The header is the engine-made write that ends where this copy starts, with the
        // write before it when the header was split across two staged buffers. Other
        // engine-made bytes (a u32be prefix, a preamble) are no header.
        let mut header = Vec::new();
        if let Some(&(b, o, n)) = self.made.last() {
            if b == to && o + n == to_off && n as usize <= RECORD_HEADER {
                header.push((b, o, n));
                let at = self.made.len() - 1;
                if (n as usize) < RECORD_HEADER && at > 0 {
                    let (pb, po, pn) = self.made[at - 1];
                    if pb != to && (pn + n) as usize == RECORD_HEADER && to_off == n {
                        header.insert(0, (pb, po, pn));
                    }
                }
            }
        }
        self.made.clear();
        for (dst, dst_off, n) in header {
            self.copies.push(Copied {
                dst,
                dst_off,
                src: dst,
                src_off: 0,
                len: 0,
                staged: n,
            });
        }
        self.copies.push(Copied {
            dst: to,
            dst_off: to_off,
            src: from,
            src_off: off,
            len,
            staged: u32::MAX,
        });
        let data = self.inner.bytes(from, off, len).to_vec();
        self.inner.write(to, to_off, &data);
    }
}
