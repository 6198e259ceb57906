//! Tail (placeholder).
pub fn run(_a: &crate::cli::TailArgs) -> i32 {
    1
}
