//! Demo (placeholder).
pub fn run(_a: &crate::cli::DemoArgs) -> i32 {
    1
}
