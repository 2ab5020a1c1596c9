use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A container's init (see runtime::linux::init): before anything else,
    // while the process has one thread and no state.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "__init")
        && let Some(config) = argv.next()
    {
        berth::runtime::linux::init::main(std::path::Path::new(&config));
    }
    let cli = berth::cli::Cli::parse();
    // Logs go to stderr; stdout carries only what scripts read.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    berth::cli::main(cli)
}
