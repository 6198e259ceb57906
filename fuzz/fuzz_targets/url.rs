//! Fuzz target for the endpoint URL parser: any string either parses or yields an error; it
//! never panics. An endpoint that parses prints a URL that parses again to the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::config::url::Endpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(endpoint) = Endpoint::parse(s) {
        let printed = endpoint.to_string();
        let again = Endpoint::parse(&printed)
            .unwrap_or_else(|e| panic!("'{printed}' (printed from '{s}') does not parse: {e}"));
        assert_eq!(again, endpoint, "printed as '{printed}' from '{s}'");
    }
});
