//! Probe (placeholder).
pub fn run(_b: bool) -> i32 {
    1
}
