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
    // A container's init (see runtime::linux::init): before anything else,
    // while the process has one thread and no state.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match argv.get(1).and_then(|a| a.to_str()) {
        Some("__init") if argv.len() == 3 => {
            berth::runtime::linux::init::main(std::path::Path::new(&argv[2]));
        }
        // A command in a running container (exec probes).
        Some("__exec") if argv.len() >= 4 => {
            let rest: Vec<String> = argv[3..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            berth::runtime::linux::init::exec_main(&argv[2].to_string_lossy(), &rest);
        }
        _ => {}
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
