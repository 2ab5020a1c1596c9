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
    if !cli.serves() {
        // A command whose reader stops reading (`berth inspect … | head`)
        // ends quietly, as other Unix tools do, instead of panicking on
        // the broken pipe. Servers keep SIGPIPE ignored: a client closing
        // its connection must not end them.
        default_sigpipe();
    } else {
        raise_open_file_limit();
    }
    // Logs go to stderr; stdout carries only what scripts read. Colours
    // only for a person at a terminal, not in a file or a pipe.
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
    berth::cli::main(cli)
}

/// A server holds a listener per wasm pod and a descriptor per connection:
/// it may open as many files as the hard limit allows, as Go's runtime and
/// containerd allow themselves, not the soft limit kept for select(2)'s sake.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

#[expect(unsafe_code, reason = "signal(2) has no safe wrapper here")]
fn default_sigpipe() {
    // SAFETY: SIG_DFL is a valid disposition, set at start before any
    // other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
