//! The `gatehouse` binary: `serve` runs an instance; every other command is a client of a
//! running instance's management API. Argument parsing, wiring and output only — the rules
//! live in the management crate.
//!
//! Modules, bottom up: `env` (environment variables), `output` (what is printed), `args` (the
//! command line), `config`
//! (settings from flags, environment and `gatehouse.toml`), `instance` (one running instance),
//! `offline` and `moving` (backup, restore, move), `commands` (running a command).

pub use gatehouse_client as client;
mod args;
mod commands;
mod config;
mod env;
pub use gatehouse_server as instance;
mod moving;
mod offline;
mod output;

pub use args::{Cli, Command, ServeArgs, Target};
pub use config::{FileConfig, serve_config};

use clap::Parser;

/// Parses arguments, runs the command and maps failure to one line and exit code 1.
pub fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let json_out = cli.json;
    match runtime.block_on(commands::execute(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            output::report_error(&e, json_out);
            std::process::ExitCode::FAILURE
        }
    }
}
