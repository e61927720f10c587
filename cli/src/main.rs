//! The `puce` command: parse, run, map errors to exit codes (0 ok, 1 error, 2 usage).

mod args;
mod commands;
mod html;
mod output;
mod passphrase;
mod progress;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    // The daemon logs what it does by default; other commands only warnings.
    let daemon = matches!(cli.command, args::Command::Node(args::NodeCommand::Run(_)));
    let filter = match cli.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PUCE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            commands::exit_code(&e)
        }
    };
    std::process::exit(code);
}
