//! The event loop (placeholder).
pub fn run_command(_a: crate::cli::RunArgs) -> i32 {
    eprintln!("ringrelay: run is not built yet");
    1
}
