//! The `gatehouse` binary: `serve` runs an instance; every other command is a client of a
//! running instance's management API. Argument parsing, wiring and output only — the rules
//! live in the management crate.
//!
//! Modules, bottom up: `env` (environment variables), `output` (what is printed), `args` (the
//! command line), `config`
//! (settings from flags, environment and `gatehouse.toml`), `instance` (one running instance),
//! `offline` and `moving` (backup, restore, move), `resources` (the commands every resource
//! kind shares, and policies), `commands` (running a command).

pub use gatehouse_client as client;
mod archive;
mod args;
mod commands;
mod config;
mod env;
mod folder;
pub use gatehouse_server as instance;
mod moving;
mod offline;
mod output;
mod resources;

pub use args::{Cli, Command, ServeArgs, Target};
pub use config::{FileConfig, serve_config};

use clap::{CommandFactory, FromArgMatches};

/// The command line. For `serve`, the client's flags (which instance to talk to, how to print)
/// stay on the root command instead of reaching the subcommand: `serve` is the instance, not a
/// client of one, so `serve --help` lists only server flags.
fn command(args: &[String]) -> clap::Command {
    let cmd = Cli::command();
    if subcommand_of(args) != Some("serve") {
        return cmd;
    }
    ["url", "token", "ca_file", "json"]
        .into_iter()
        .fold(cmd, |c, arg| c.mut_arg(arg, |a| a.global(false)))
}

/// The subcommand named in `args` (the first word that is neither a flag nor a flag's value).
fn subcommand_of(args: &[String]) -> Option<&str> {
    const TAKE_VALUES: [&str; 4] = ["--url", "--token", "--data-dir", "--ca-file"];
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        if TAKE_VALUES.contains(&w.as_str()) {
            words.next();
        } else if !w.starts_with('-') {
            return Some(w);
        }
    }
    None
}

/// Parses arguments, runs the command and maps failure to one line and exit code 1.
pub fn run() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = match Cli::from_arg_matches(&command(&args).get_matches_from(&args)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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

#[cfg(test)]
mod tests {
    #[test]
    fn serve_help_is_help() {
        let args: Vec<String> = ["gatehouse", "serve", "--help"].map(String::from).into();
        let e = super::command(&args)
            .try_get_matches_from(&args)
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = e.to_string();
        assert!(
            !help.contains("--url") && help.contains("--data-dir"),
            "{help}"
        );
        let args: Vec<String> = ["gatehouse", "--data-dir", "d", "api", "list", "--json"]
            .map(String::from)
            .into();
        super::command(&args)
            .try_get_matches_from(&args)
            .expect("client flags anywhere");
    }

    /// Every subcommand and every flag says in one line what it is for.
    #[test]
    fn everything_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.is_hide_set() || ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                let here = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(here.clone());
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = <super::Cli as clap::CommandFactory>::command();
        cmd.build();
        walk(&cmd, "gatehouse", &mut missing);
        assert!(missing.is_empty(), "no help for:\n{}", missing.join("\n"));
    }
}
