//! Serial ports: opening a tty by its path and setting it raw with termios, for a `serial://`
//! input of the relay and for `ringrelay gen` writing to one.
//!
//! Owns: the open flags (`O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC`: never the relay's
//! controlling terminal, and an open that does not wait for the modem's carrier) and the line
//! settings: raw mode (`cfmakeraw`: no echo, no line editing, no CR/LF translation, 8 bits
//! through), the rate, `CLOCAL | CREAD` (modem lines ignored, receiver on), the character size,
//! parity, stop bits, RTS/CTS, and `VMIN = 1, VTIME = 0` (a read returns as soon as one byte
//! is there). With parity on, `INPCK | IGNPAR`: a byte the UART received with a parity or
//! framing error is dropped by the kernel rather than passed on wrong.
//!
//! The path is opened as given each time, so a symlink (`/dev/serial/by-id/...`) is resolved
//! at every open: a USB adapter that comes back as another `ttyUSBn` is found again. Data never
//! passes through here in the relay: its reads go through the ring.

use crate::config::serial::{Flow, Parity, SerialParams};
use nix::fcntl::{self, OFlag};
use nix::sys::stat::Mode;
use nix::sys::termios::{
    self, BaudRate, ControlFlags, InputFlags, SetArg, SpecialCharacterIndices, Termios,
};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The termios constant of a rate of [`crate::config::serial::BAUD_RATES`].
pub fn baud_rate(n: u32) -> Option<BaudRate> {
    use BaudRate::*;
    Some(match n {
        50 => B50,
        75 => B75,
        110 => B110,
        134 => B134,
        150 => B150,
        200 => B200,
        300 => B300,
        600 => B600,
        1200 => B1200,
        1800 => B1800,
        2400 => B2400,
        4800 => B4800,
        9600 => B9600,
        19200 => B19200,
        38400 => B38400,
        57600 => B57600,
        115200 => B115200,
        230400 => B230400,
        460800 => B460800,
        500000 => B500000,
        576000 => B576000,
        921600 => B921600,
        1000000 => B1000000,
        1152000 => B1152000,
        1500000 => B1500000,
        2000000 => B2000000,
        2500000 => B2500000,
        3000000 => B3000000,
        3500000 => B3500000,
        4000000 => B4000000,
        _ => return None,
    })
}

/// Sets the open tty `fd` raw with the settings `p`. Fails with ENOTTY when `fd` is not a
/// terminal (a regular file or a socket at the port's path).
pub fn configure(fd: impl AsFd, p: &SerialParams) -> io::Result<()> {
    let fd = fd.as_fd();
    let mut t = termios::tcgetattr(fd)?;
    apply(&mut t, p)?;
    termios::tcsetattr(fd, SetArg::TCSANOW, &t)?;
    Ok(())
}

/// Turns the settings `t` into raw mode with the line settings `p`.
pub fn apply(t: &mut Termios, p: &SerialParams) -> io::Result<()> {
    termios::cfmakeraw(t);
    let rate = baud_rate(p.baud).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} baud is not a termios rate", p.baud),
        )
    })?;
    set_speed(t, rate)?;
    let c = &mut t.control_flags;
    c.remove(
        ControlFlags::CSIZE | ControlFlags::PARENB | ControlFlags::PARODD | ControlFlags::CSTOPB,
    );
    c.remove(ControlFlags::CRTSCTS);
    c.insert(ControlFlags::CLOCAL | ControlFlags::CREAD);
    c.insert(match p.databits {
        5 => ControlFlags::CS5,
        6 => ControlFlags::CS6,
        7 => ControlFlags::CS7,
        _ => ControlFlags::CS8,
    });
    match p.parity {
        Parity::None => {}
        Parity::Even => c.insert(ControlFlags::PARENB),
        Parity::Odd => c.insert(ControlFlags::PARENB | ControlFlags::PARODD),
    }
    if p.stopbits == 2 {
        c.insert(ControlFlags::CSTOPB);
    }
    if p.flow == Flow::RtsCts {
        c.insert(ControlFlags::CRTSCTS);
    }
    if p.parity != Parity::None {
        t.input_flags.insert(InputFlags::INPCK | InputFlags::IGNPAR);
    }
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    Ok(())
}

#[cfg(not(all(target_arch = "arm", target_env = "gnu")))]
fn set_speed(t: &mut Termios, rate: BaudRate) -> io::Result<()> {
    Ok(termios::cfsetspeed(t, rate)?)
}

/// The armhf build links glibc statically, and the libc crate names glibc's speed functions by
/// symbol version (`cfsetspeed@GLIBC_2.4`), which a static link cannot resolve. The rate goes
/// into the CBAUD bits of `c_cflag` instead, as cfsetspeed does: they are what tcsetattr of
/// that glibc hands the kernel.
#[cfg(all(target_arch = "arm", target_env = "gnu"))]
fn set_speed(t: &mut Termios, rate: BaudRate) -> io::Result<()> {
    t.control_flags
        .remove(ControlFlags::CBAUD | ControlFlags::CBAUDEX);
    t.control_flags
        .insert(ControlFlags::from_bits_retain(rate as libc::tcflag_t));
    Ok(())
}

/// Opens the serial port at `path` (following symlinks, as every open does) and sets it up
/// with `p`. Without `nonblocking`, the descriptor is switched back to blocking mode once set
/// up: the ring then waits for data in its own way (a tty opened `O_NONBLOCK` would make a
/// ring read fail with EAGAIN instead).
pub fn open(path: &Path, p: &SerialParams, nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = fcntl::open(path, flags, Mode::empty())?;
    configure(&fd, p)?;
    if !nonblocking {
        let fl = fcntl::fcntl(&fd, fcntl::FcntlArg::F_GETFL)?;
        let fl = OFlag::from_bits_retain(fl) & !OFlag::O_NONBLOCK;
        fcntl::fcntl(&fd, fcntl::FcntlArg::F_SETFL(fl))?;
    }
    Ok(fd)
}

/// Bytes received on tty `fd` that no reader has taken yet (FIONREAD).
pub fn queued_input(fd: impl AsFd) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`, alive and
    // writable for the whole call; `fd` is borrowed, so it stays open during it.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// The device node `fd` is open on (`/dev/ttyUSB1` behind a by-id link), for log lines.
pub fn device_of(fd: impl AsFd, path: &Path) -> String {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    std::fs::read_link(link)
        .or_else(|_| std::fs::canonicalize(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::serial::BAUD_RATES;

    #[test]
    fn every_configured_rate_has_a_termios_constant() {
        for r in BAUD_RATES {
            assert!(baud_rate(r).is_some(), "{r}");
        }
        assert!(baud_rate(4801).is_none());
    }

    #[test]
    fn a_pty_is_set_raw_with_the_settings() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let p = SerialParams {
            baud: 4800,
            databits: 7,
            parity: Parity::Odd,
            stopbits: 2,
            flow: Flow::None,
        };
        // A pty keeps raw mode but forces CS8 without parity: the settings are checked as
        // `apply` leaves them, and `configure` on the pty for what it keeps.
        let mut t = termios::tcgetattr(&pty.slave).unwrap();
        apply(&mut t, &p).unwrap();
        assert_eq!(termios::cfgetospeed(&t), BaudRate::B4800);
        assert!(t
            .input_flags
            .contains(InputFlags::INPCK | InputFlags::IGNPAR));
        assert!(!t.output_flags.contains(termios::OutputFlags::OPOST));
        let c = t.control_flags;
        assert!(c.contains(ControlFlags::CS7 | ControlFlags::PARENB | ControlFlags::PARODD));
        assert!(c.contains(ControlFlags::CSTOPB | ControlFlags::CLOCAL | ControlFlags::CREAD));
        assert!(!t.local_flags.contains(termios::LocalFlags::ICANON));
        assert!(!t.local_flags.contains(termios::LocalFlags::ECHO));
        assert_eq!(t.control_chars[SpecialCharacterIndices::VMIN as usize], 1);
        configure(&pty.slave, &p).unwrap();
        let t = termios::tcgetattr(&pty.slave).unwrap();
        assert!(!t.local_flags.contains(termios::LocalFlags::ICANON));
        assert!(!t.output_flags.contains(termios::OutputFlags::OPOST));
        assert_eq!(t.control_chars[SpecialCharacterIndices::VMIN as usize], 1);
        let path = std::env::temp_dir().join(format!("ringrelay-not-a-tty-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let e = configure(&f, &p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }
}
