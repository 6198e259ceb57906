//! The `ringrelay` binary: turns command-line arguments into a startup and an exit code.
//! Everything else lives in the library crate.
fn main() {
    std::process::exit(ringrelay::cli::main());
}
