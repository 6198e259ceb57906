//! The driver: the one io_uring ring ([`ring`], built by [`setup`]), the registered buffer
//! arena ([`arena`]), provided-buffer rings ([`bufring`]), sockets, files and pipes ([`net`],
//! [`sys`]), serial ports ([`serial`]), and the loop that feeds completions to the engine ([`event_loop`]).
//!
//! The border: the engine ([`crate::engine`]) decides and names buffers and descriptors by
//! number; the driver turns its operations into SQEs, owns every pointer the kernel is given
//! (the arena, iovecs and msghdrs keyed by token) and every descriptor until the engine says
//! it may close. All `unsafe` of the relay's own code is here, in [`crate::shm`] and in
//! [`crate::ops::daemonize`], each block with its safety argument.
pub mod arena;
#[allow(unsafe_code)]
pub mod bufring;
pub mod event_loop;
#[allow(unsafe_code)]
pub mod net;
#[allow(unsafe_code)]
pub mod ring;
pub mod serial;
#[allow(unsafe_code)]
pub mod setup;
pub mod spoolfs;
pub mod sys;
