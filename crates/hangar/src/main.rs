//! The `hangar` binary: everything lives in the libraries.

fn main() -> std::process::ExitCode {
    hangar_cli::main()
}
