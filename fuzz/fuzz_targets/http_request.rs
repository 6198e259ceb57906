//! Fuzz target for the metrics server's request parser: any bytes parse to "read more", a
//! request whose head lies within the bytes and within the 8KiB limit, or a rejection; never a
//! panic. Cutting the bytes never turns a rejection of their start into a request, and a
//! response head for any status is well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::metrics::http::{parse, response_head, Parsed, Status, MAX_REQUEST, TEXT_TYPE};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Request(r) => {
            assert!(r.len <= data.len().min(MAX_REQUEST), "head past the bytes or the limit");
            assert!(!(r.head && !r.allowed_method), "HEAD is allowed");
            // The same head followed by anything parses to the same request.
            let mut more = data[..r.len].to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(&more), Parsed::Request(r));
        }
        Parsed::Incomplete => assert!(data.len() < MAX_REQUEST, "incomplete past the limit"),
        Parsed::Reject(s) => {
            let h = response_head(s, TEXT_TYPE, 0, false);
            assert!(h.starts_with(&format!("HTTP/1.1 {} ", s.code())));
            assert!(h.ends_with("\r\n\r\n"));
            assert_ne!(s, Status::Ok);
        }
    }
});
