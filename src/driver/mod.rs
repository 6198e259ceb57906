//! The driver: the one io_uring ring, the registered buffer arena, sockets and files, and the
//! loop that feeds completions to the engine. All `unsafe` of the relay's own code is here.
#[allow(unsafe_code)]
pub mod bufring;
pub mod daemon;
pub mod net;
#[allow(unsafe_code)]
pub mod pool;
#[allow(unsafe_code)]
pub mod ring;
