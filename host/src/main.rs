use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

// Every request allocates a store, a WASI context and their tables and frees
// them on return, on whichever worker thread ran it; glibc's malloc spent
// about 5% of a request's CPU on that (bench/router), mimalloc's
// thread-local free lists less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
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
