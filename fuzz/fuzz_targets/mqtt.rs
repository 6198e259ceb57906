//! Fuzz target for the MQTT decoder: any bytes a broker may send, fed in any split, decode to
//! the same packets as fed whole, or fail with a protocol error; they never panic, and a packet
//! never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::engine::mqtt::decode;

fn run(chunks: &mut dyn Iterator<Item = &[u8]>) -> (Vec<String>, bool) {
    let mut have: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    for c in chunks {
        have.extend_from_slice(c);
        loop {
            match decode(&have) {
                Ok(Some((p, n))) => {
                    assert!(n > 0 && n <= have.len());
                    got.push(format!("{p:?}"));
                    have.drain(..n);
                }
                Ok(None) => break,
                Err(_) => return (got, true),
            }
        }
    }
    (got, false)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = usize::from(data[0]).max(1);
    let body = &data[1..];
    let whole = run(&mut std::iter::once(body));
    let pieces = run(&mut body.chunks(split));
    assert_eq!(whole, pieces, "the split changed what was decoded");
});
