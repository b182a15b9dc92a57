//! `gatehouse`: parse the arguments, run the command, exit.

fn main() -> std::process::ExitCode {
    gatehouse_cli::run()
}
