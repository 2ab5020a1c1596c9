//! `berth-init`: the first process of every Linux container berth starts
//! (`berth-init init`, see `runtime::linux::init`) and of every command
//! run in one (`berth-init exec PID INIT_PID CMD ARGS...`, exec probes).
//!
//! A binary of its own rather than berth re-executing itself: berth is
//! wasmtime and a server, some 30 MB of code whose megabyte of relocated
//! data the loader rewrites at every start; this is the init's code alone,
//! and each container start runs it once.

use std::process::exit;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("init") if argv.len() == 2 => berth_linux::init::main(),
        Some("exec") if argv.len() >= 5 => {
            berth_linux::init::exec_main(&argv[2], &argv[3], &argv[4..])
        }
        _ => {
            eprintln!(
                "berth-init starts berth's Linux containers; berth runs it, not people\n\
                 usage: berth-init init        (the container's config on stdin)\n       \
                 berth-init exec PID INIT_PID CMD [ARGS...]"
            );
            exit(2)
        }
    }
}
