//! The checks across endpoints and channels, once each channel is valid on its own: what
//! `ringrelay run` would find taken or wrong only when it starts. Owns three rules:
//!
//! * **Binds.** No two endpoints bind the same port of overlapping addresses (`tcp-listen`
//!   inputs and outputs, `udp` inputs; port 0 never conflicts), open the same Unix socket
//!   path, write the same file or read the same serial port (as written: two links to one
//!   device are not found). A wildcard address overlaps every address of its family:
//!   `0.0.0.0` every IPv4 one, `[::]` every IPv6 one but no IPv4 one, since the daemon binds
//!   IPv6 sockets `IPV6_V6ONLY` (`src/driver/net.rs`). Multicast inputs share their port
//!   (`SO_REUSEADDR`), so two of them overlap only on the very same address.
//! * **Shared-memory names.** No two channels that publish write the same file in `shm_dir`:
//!   a channel's regions are named by [`region_file_name`] (`NAME`, then `NAME.FACTOR` for
//!   every decimation level after the first), and none may be the daemon's [`STATS_FILE`].
//! * **UDP loops.** No UDP output sends to its own channel's UDP input: the same port, and the
//!   same address, or a local one (`127.0.0.0/8`, `::1`, the wildcard) when the input binds
//!   the wildcard of its family, or the group the input joined (multicast loopback is on).
//!
//! * **Spool directories.** No two outputs share one spool directory.
//!
//! Host names are compared as written, never resolved. A conflict is reported at the later of
//! its two lines, naming the earlier.

use crate::config::parse::quote;
use crate::config::url::{Endpoint, Scheme, Target};
use crate::config::ChannelConfig;
use crate::shm::publisher::region_file_name;
use crate::shm::STATS_FILE;
use std::net::IpAddr;
use std::path::Path;

/// Reports every conflict between the endpoints and shared-memory files of `chans`.
pub(super) fn check_conflicts(chans: &[ChannelConfig], err: &mut dyn FnMut(usize, &str, String)) {
    check_binds(chans, err);
    check_region_names(chans, err);
    check_loops(chans, err);
    check_spool_dirs(chans, err);
}

/// No two outputs keep their spool in one directory (each would replay and delete the
/// other's segments). Paths are compared as written.
fn check_spool_dirs(chans: &[ChannelConfig], err: &mut dyn FnMut(usize, &str, String)) {
    let mut seen: Vec<(&Path, usize, &str)> = Vec::new();
    for c in chans {
        for o in &c.outputs {
            let Some(sp) = &o.spool else { continue };
            let dir = sp.dir.as_path();
            match seen.iter().find(|(d, _, _)| *d == dir) {
                Some((_, l, ch)) => err(
                    o.line,
                    "output",
                    format!(
                        "spool directory {} is already the spool of an output of channel {} at \
                         line {l}: every output needs its own",
                        dir.display(),
                        quote(ch)
                    ),
                ),
                None => seen.push((dir, o.line, &c.name)),
            }
        }
    }
}

/// What an endpoint takes for itself on this host.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim<'a> {
    Port {
        proto: &'static str,
        host: &'a str,
        port: u16,
        /// Binds with `SO_REUSEADDR` so that others may share the port (multicast inputs).
        shared: bool,
    },
    Path {
        kind: &'static str,
        path: &'a Path,
    },
}

fn claim<'a>(ep: &'a Endpoint, key: &str) -> Option<Claim<'a>> {
    match (ep.scheme, &ep.target, key) {
        (Scheme::TcpListen, Target::Inet { host, port }, _) if *port != 0 => Some(Claim::Port {
            proto: "tcp",
            host,
            port: *port,
            shared: false,
        }),
        (Scheme::Udp, Target::Inet { host, port }, "input") if *port != 0 => Some(Claim::Port {
            proto: "udp",
            host,
            port: *port,
            shared: ep.opts.group.is_some(),
        }),
        (Scheme::UnixListen, Target::Path(p), _) => Some(Claim::Path {
            kind: "unix",
            path: p,
        }),
        (Scheme::File, Target::Path(p), _) => Some(Claim::Path {
            kind: "file",
            path: p,
        }),
        // Two readers of one port would each get some of its bytes.
        (Scheme::Serial, Target::Path(p), _) => Some(Claim::Path {
            kind: "serial",
            path: p,
        }),
        _ => None,
    }
}

/// How two claims collide, if they do.
enum Collision {
    /// The same address (as an IP, or a host name as written) or path.
    Same,
    /// A wildcard address and another one of its family.
    Overlap,
}

fn collision(a: Claim, b: Claim) -> Option<Collision> {
    match (a, b) {
        (
            Claim::Port {
                proto: pa,
                host: ha,
                port: a_port,
                shared: sa,
            },
            Claim::Port {
                proto: pb,
                host: hb,
                port: b_port,
                shared: sb,
            },
        ) if pa == pb && a_port == b_port => match (ha.parse::<IpAddr>(), hb.parse::<IpAddr>()) {
            (Ok(x), Ok(y)) if x == y => Some(Collision::Same),
            (Ok(x), Ok(y))
                if x.is_ipv4() == y.is_ipv4()
                    && (x.is_unspecified() || y.is_unspecified())
                    && !(sa && sb) =>
            {
                Some(Collision::Overlap)
            }
            (Ok(_), Ok(_)) => None,
            _ => (ha == hb).then_some(Collision::Same),
        },
        (a @ Claim::Path { .. }, b @ Claim::Path { .. }) => (a == b).then_some(Collision::Same),
        _ => None,
    }
}

/// No two endpoints bind overlapping addresses or take the same path.
fn check_binds(chans: &[ChannelConfig], err: &mut dyn FnMut(usize, &str, String)) {
    // Each claim with its endpoint, line and channel, in file order.
    let mut seen: Vec<(Claim, &Endpoint, usize, &str)> = Vec::new();
    for c in chans {
        let mut eps: Vec<(&Endpoint, usize, &str)> = vec![(&c.input, c.input_line, "input")];
        eps.extend(c.outputs.iter().map(|o| (&o.endpoint, o.line, "output")));
        for (ep, line, key) in eps {
            let Some(mine) = claim(ep, key) else {
                continue;
            };
            let earlier = seen
                .iter()
                .find_map(|&(theirs, tep, l, ch)| Some((collision(mine, theirs)?, tep, l, ch)));
            match earlier {
                Some((Collision::Same, _, l, ch)) => err(
                    line,
                    key,
                    format!(
                        "{} is already used by channel {} at line {l}",
                        quote(&ep.url()),
                        quote(ch)
                    ),
                ),
                Some((Collision::Overlap, tep, l, ch)) => err(
                    line,
                    key,
                    format!(
                        "{} overlaps {} of channel {} at line {l}: a wildcard address takes the \
                         port on every address of its family",
                        quote(&ep.url()),
                        quote(&tep.url()),
                        quote(ch)
                    ),
                ),
                None => seen.push((mine, ep, line, &c.name)),
            }
        }
    }
}

/// No two publishing channels write the same file in `shm_dir`, nor the stats file.
fn check_region_names(chans: &[ChannelConfig], err: &mut dyn FnMut(usize, &str, String)) {
    // Each region name with the line and key that named it and its channel, in file order.
    let mut seen: Vec<(String, usize, &str)> = Vec::new();
    for c in chans {
        let Some(s) = c.samples.as_ref().filter(|s| s.shm) else {
            continue;
        };
        for (level, &factor) in s.decimate.factors.iter().enumerate() {
            let region = region_file_name(&c.name, level, factor);
            let (line, key) = if level == 0 {
                (c.line, "[channel]")
            } else {
                (c.decimate_line, "decimate")
            };
            if region == STATS_FILE {
                err(
                    line,
                    key,
                    format!(
                        "channel {} would publish its shm region {} over the daemon's stats \
                         file of that name in shm_dir",
                        quote(&c.name),
                        quote(&region)
                    ),
                );
            } else if let Some((_, l, ch)) = seen.iter().find(|(r, _, _)| *r == region) {
                err(
                    line,
                    key,
                    format!(
                        "shm region {} of channel {} is already published by channel {} \
                         (line {l})",
                        quote(&region),
                        quote(&c.name),
                        quote(ch)
                    ),
                );
            } else {
                seen.push((region, line, &c.name));
            }
        }
    }
}

/// No UDP output sends to its own channel's UDP input.
fn check_loops(chans: &[ChannelConfig], err: &mut dyn FnMut(usize, &str, String)) {
    for c in chans {
        let (Scheme::Udp, Target::Inet { host: bound, port }) = (c.input.scheme, &c.input.target)
        else {
            continue;
        };
        if *port == 0 {
            continue;
        }
        for o in &c.outputs {
            let (
                Scheme::Udp,
                Target::Inet {
                    host: dest,
                    port: to,
                },
            ) = (o.endpoint.scheme, &o.endpoint.target)
            else {
                continue;
            };
            if to == port && reaches(bound, c.input.opts.group, dest) {
                err(
                    o.line,
                    "output",
                    format!(
                        "{} sends to this channel's own input {} (line {}): a loop",
                        quote(&o.endpoint.url()),
                        quote(&c.input.url()),
                        c.input_line
                    ),
                );
            }
        }
    }
}

/// Whether a datagram sent to `dest` reaches a UDP socket on the same port bound to `bound`
/// that joined `group`.
fn reaches(bound: &str, group: Option<IpAddr>, dest: &str) -> bool {
    let (Ok(b), Ok(d)) = (bound.parse::<IpAddr>(), dest.parse::<IpAddr>()) else {
        return bound == dest;
    };
    // An IPv4-mapped destination is sent as IPv4.
    let d = d.to_canonical();
    let local = match d {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    };
    b == d
        || group == Some(d) && b.is_unspecified()
        || b.is_unspecified() && b.is_ipv4() == d.is_ipv4() && local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_overlap_their_family_only() {
        let tcp = |host| Claim::Port {
            proto: "tcp",
            host,
            port: 5,
            shared: false,
        };
        let overlaps = |a, b| matches!(collision(tcp(a), tcp(b)), Some(Collision::Overlap));
        assert!(overlaps("0.0.0.0", "127.0.0.1"));
        assert!(overlaps("192.0.2.1", "0.0.0.0"));
        assert!(overlaps("::", "::1"));
        assert!(!overlaps("::", "127.0.0.1"));
        assert!(!overlaps("0.0.0.0", "::1"));
        assert!(!overlaps("127.0.0.1", "127.0.0.2"));
        assert!(matches!(
            collision(tcp("::"), tcp("0:0::0")),
            Some(Collision::Same)
        ));
        assert!(matches!(
            collision(tcp("h"), tcp("h")),
            Some(Collision::Same)
        ));
        assert!(collision(tcp("localhost"), tcp("127.0.0.1")).is_none());
        let udp = |host, shared| Claim::Port {
            proto: "udp",
            host,
            port: 5,
            shared,
        };
        assert!(collision(tcp("0.0.0.0"), udp("0.0.0.0", false)).is_none());
        assert!(collision(udp("0.0.0.0", true), udp("239.1.1.1", true)).is_none());
        assert!(collision(udp("0.0.0.0", true), udp("127.0.0.1", false)).is_some());
    }

    #[test]
    fn what_a_udp_output_reaches() {
        let g: Option<IpAddr> = Some("239.1.1.1".parse().unwrap());
        assert!(reaches("127.0.0.1", None, "127.0.0.1"));
        assert!(!reaches("127.0.0.1", None, "127.0.0.2"));
        assert!(reaches("0.0.0.0", None, "127.0.0.2"));
        assert!(reaches("0.0.0.0", None, "::ffff:127.0.0.1"));
        assert!(!reaches("0.0.0.0", None, "192.0.2.1"));
        assert!(!reaches("0.0.0.0", None, "::1"));
        assert!(reaches("::", None, "::1"));
        assert!(!reaches("::", None, "127.0.0.1"));
        assert!(reaches("0.0.0.0", g, "239.1.1.1"));
        assert!(reaches("239.1.1.1", g, "239.1.1.1"));
        assert!(!reaches("0.0.0.0", g, "239.1.1.2"));
        assert!(!reaches("0.0.0.0", None, "239.1.1.1"));
        assert!(reaches("localhost", None, "localhost"));
        assert!(!reaches("0.0.0.0", None, "localhost"));
    }
}
