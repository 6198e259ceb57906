//! The metrics server's HTTP/1.x: parsing one request head out of the bytes a connection sent,
//! and writing a response head.
//!
//! Owns: the request grammar the server accepts (a request line `METHOD SP TARGET SP
//! HTTP/1.0|HTTP/1.1`, header lines `name: value`, an empty line; CRLF or bare LF), the limit of
//! [`MAX_REQUEST`] bytes per head, keep-alive rules (HTTP/1.1 keeps the connection unless
//! `Connection: close`; HTTP/1.0 closes it unless `Connection: keep-alive`), and the status of
//! every malformed or refused request. Pure: bytes in, a value out; no I/O, no clock, no
//! allocation beyond the response head. Fuzzed (`fuzz/fuzz_targets/http_request.rs`).
//!
//! Must never: panic on any input, or look past [`MAX_REQUEST`] bytes.

use std::fmt::Write;

/// Largest request head the server reads; a longer one is answered 431 and closed.
pub const MAX_REQUEST: usize = 8192;

/// A response status the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 200,
    BadRequest = 400,
    NotFound = 404,
    MethodNotAllowed = 405,
    HeadersTooLarge = 431,
    ServiceUnavailable = 503,
    VersionNotSupported = 505,
}

impl Status {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/metrics`: the Prometheus text format.
    Metrics,
    /// `/healthz`: `ok`, or 503 with the problems.
    Healthz,
    /// Any other path (404).
    Unknown,
}

/// A well-formed request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// GET or HEAD; any other method is `false` here and answered 405.
    pub allowed_method: bool,
    /// HEAD: the response has no body.
    pub head: bool,
    pub target: Target,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// Bytes of the head, empty line included (a pipelined request starts after them).
    pub len: usize,
}

/// What the bytes received so far make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No whole head yet, and no error so far: read more.
    Incomplete,
    Request(Request),
    /// A malformed or refused request: answer with this status and close.
    Reject(Status),
}

/// Parses the head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(MAX_REQUEST)];
    let Some((head_len, body_at)) = find_end(window) else {
        if let Some(line_end) = window.iter().position(|&b| b == b'\n') {
            // The request line is whole: reject garbage now rather than at the limit.
            if let Err(s) = request_line(trim_cr(&window[..line_end])) {
                return Parsed::Reject(s);
            }
        } else if !window.is_empty() && !window.iter().all(|&b| is_tchar(b)) && !starts_ok(window) {
            return Parsed::Reject(Status::BadRequest);
        }
        return if buf.len() >= MAX_REQUEST {
            Parsed::Reject(Status::HeadersTooLarge)
        } else {
            Parsed::Incomplete
        };
    };
    let head = &window[..head_len];
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let first = lines.next().unwrap_or_default();
    let (method, path, v11) = match request_line(first) {
        Ok(x) => x,
        Err(s) => return Parsed::Reject(s),
    };
    let mut keep_alive = v11;
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            return Parsed::Reject(Status::BadRequest);
        };
        let (name, value) = (&l[..colon], trim_ows(&l[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Parsed::Reject(Status::BadRequest);
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for opt in value.split(|&b| b == b',').map(trim_ows) {
                if opt.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && value != b"0")
        {
            // A body is never read: answer, then close rather than parse it as a request.
            keep_alive = false;
        }
    }
    let head_only = method == b"HEAD";
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    Parsed::Request(Request {
        allowed_method: method == b"GET" || head_only,
        head: head_only,
        target: match path {
            b"/metrics" => Target::Metrics,
            b"/healthz" => Target::Healthz,
            _ => Target::Unknown,
        },
        keep_alive,
        len: body_at,
    })
}

/// Whether `w` could still become a request line (a method token so far, then a space).
fn starts_ok(w: &[u8]) -> bool {
    match w.iter().position(|&b| b == b' ') {
        Some(sp) => sp > 0 && w[..sp].iter().all(|&b| is_tchar(b)),
        None => false,
    }
}

/// `(end of the head's last line, start of what follows the empty line)`.
fn find_end(w: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(p) = w[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        // The line after this newline is empty: "\n\n" or "\n\r\n".
        if w.get(nl + 1) == Some(&b'\n') {
            return Some((nl, nl + 2));
        }
        if w.get(nl + 1) == Some(&b'\r') && w.get(nl + 2) == Some(&b'\n') {
            return Some((nl, nl + 3));
        }
        i = nl + 1;
    }
    None
}

/// `(method, target, is HTTP/1.1)`.
fn request_line(l: &[u8]) -> Result<(&[u8], &[u8], bool), Status> {
    let mut parts = l.split(|&b| b == b' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if m.is_empty() || !m.iter().all(|&b| is_tchar(b)) {
        return Err(Status::BadRequest);
    }
    if t.is_empty() || !t.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(Status::BadRequest);
    }
    match v {
        b"HTTP/1.1" => Ok((m, t, true)),
        b"HTTP/1.0" => Ok((m, t, false)),
        v if v.starts_with(b"HTTP/") => Err(Status::VersionNotSupported),
        _ => Err(Status::BadRequest),
    }
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(s, |e| e + 1);
    &v[s..e.max(s)]
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The Content-Type of `/metrics`.
pub const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The Content-Type of everything else.
pub const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// A response head: status line, Content-Type, Content-Length, Connection, empty line.
pub fn response_head(
    status: Status,
    content_type: &str,
    body_len: usize,
    keep_alive: bool,
) -> String {
    let mut h = String::with_capacity(160);
    let _ = write!(
        h,
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\nConnection: {}\r\n",
        status.code(),
        status.reason(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    if status == Status::MethodNotAllowed {
        h.push_str("Allow: GET, HEAD\r\n");
    }
    h.push_str("\r\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(s: &str) -> Request {
        match parse(s.as_bytes()) {
            Parsed::Request(r) => r,
            p => panic!("{s:?}: {p:?}"),
        }
    }

    #[test]
    fn gets_and_heads() {
        let r = req("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.allowed_method && !r.head && r.keep_alive);
        assert_eq!(r.target, Target::Metrics);
        assert_eq!(r.len, 34);
        let r = req("HEAD /healthz?x=1 HTTP/1.0\n\n");
        assert!(r.head && !r.keep_alive);
        assert_eq!(r.target, Target::Healthz);
        assert_eq!(r.len, 28);
        let r = req("GET /metrics HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let r = req("GET / HTTP/1.1\r\nconnection: foo, close\r\n\r\n");
        assert!(!r.keep_alive);
        assert_eq!(r.target, Target::Unknown);
        let r = req("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert!(!r.allowed_method && !r.keep_alive);
    }

    #[test]
    fn incomplete_and_rejected() {
        assert_eq!(parse(b""), Parsed::Incomplete);
        assert_eq!(parse(b"GE"), Parsed::Incomplete);
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost"), Parsed::Incomplete);
        assert_eq!(parse(b"\x00\xff\x13"), Parsed::Reject(Status::BadRequest));
        assert_eq!(parse(b"GET /x\r\n"), Parsed::Reject(Status::BadRequest));
        assert_eq!(
            parse(b"GET /x HTTP/2.0\r\n\r\n"),
            Parsed::Reject(Status::VersionNotSupported)
        );
        assert_eq!(
            parse(b"GET /x HTTP/1.1\r\nno colon\r\n\r\n"),
            Parsed::Reject(Status::BadRequest)
        );
        let mut big = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        big.resize(MAX_REQUEST - 1, b'a');
        assert_eq!(parse(&big), Parsed::Incomplete);
        big.push(b'a');
        assert_eq!(parse(&big), Parsed::Reject(Status::HeadersTooLarge));
    }

    #[test]
    fn heads() {
        let h = response_head(Status::MethodNotAllowed, TEXT_TYPE, 3, false);
        assert!(h.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(h.contains("Content-Length: 3\r\n"));
        assert!(h.contains("Connection: close\r\n"));
        assert!(h.contains("Allow: GET, HEAD\r\n"));
        assert!(h.ends_with("\r\n\r\n"));
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(b in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            match parse(&b) {
                Parsed::Request(r) => prop_assert!(r.len <= b.len().min(MAX_REQUEST)),
                Parsed::Incomplete => prop_assert!(b.len() < MAX_REQUEST),
                Parsed::Reject(_) => {}
            }
        }

        #[test]
        fn any_cut_of_a_request_is_incomplete_until_whole(cut in 0usize..40) {
            let s = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
            let cut = cut.min(s.len() - 1);
            prop_assert_eq!(parse(&s[..cut]), Parsed::Incomplete);
        }
    }
}
