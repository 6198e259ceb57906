//! Fuzz target for the config parser: any text either parses or yields errors that each name a
//! line of the text; it never panics. A config that parses prints (as `ringrelay check` does) a
//! normalized form that parses again and prints the same (line numbers aside, nothing is lost).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::config::parse_str;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_str("fuzz.conf", &text) {
        Ok(config) => {
            let normalized = config.to_string();
            let again = parse_str("fuzz.conf", &normalized).unwrap_or_else(|errs| {
                panic!("the normalized form does not parse: {errs:?}\n{normalized}")
            });
            assert_eq!(again.to_string(), normalized, "normalized twice differs");
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error result with no error");
            let lines = text.lines().count().max(1);
            for e in &errors {
                assert_eq!(e.file, "fuzz.conf");
                assert!(e.line <= lines, "error at line {} of {lines}: {e}", e.line);
                let _ = e.to_string();
            }
        }
    }
});
