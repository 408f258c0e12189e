//! The `replaydb` command-line tool. See `replaydb --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
