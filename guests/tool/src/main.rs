//! A small command for berth's tests: each subcommand exercises one thing a
//! command component is given (arguments, environment, stdin, a granted
//! directory, its exit code) or runs into one of its limits.

use std::io::{Read as _, Write as _};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rest = args.get(2..).unwrap_or_default();
    match args.get(1).map(String::as_str) {
        // The arguments it got, argv[0] first.
        Some("args") => println!("{}", args.join(" ")),
        Some("env") => {
            for name in rest {
                println!("{name}={}", std::env::var(name).unwrap_or_default());
            }
        }
        // Stdin to stdout, uppercased, so the test knows it went through.
        Some("upper") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).unwrap();
            print!("{}", text.to_uppercase());
        }
        Some("write") => {
            std::fs::write(&rest[0], &rest[1]).unwrap_or_else(|e| fail(&rest[0], e));
        }
        Some("read") => {
            let text = std::fs::read_to_string(&rest[0]).unwrap_or_else(|e| fail(&rest[0], e));
            print!("{text}");
        }
        Some("exit") => {
            eprintln!("leaving with {}", rest[0]);
            std::process::exit(rest[0].parse().unwrap());
        }
        // Ends after MS milliseconds, having used no CPU meanwhile.
        Some("sleep") => {
            std::thread::sleep(std::time::Duration::from_millis(rest[0].parse().unwrap()));
        }
        // Never ends by itself: the CPU time limit ends it.
        Some("spin") => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        // Keeps what it asks for, past any small memory limit.
        Some("alloc") => {
            let mib: usize = rest[0].parse().unwrap();
            let kept: Vec<Vec<u8>> = (0..mib).map(|_| vec![1u8; 1 << 20]).collect();
            println!("kept {} MiB", kept.len());
        }
        Some("panic") => panic!("as asked"),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "usage: tool args|env NAME...|upper|write PATH TEXT|read PATH|exit N|sleep MS|spin|alloc MIB|panic"
            );
            std::process::exit(2);
        }
    }
}

fn fail(path: &str, e: std::io::Error) -> ! {
    eprintln!("{path}: {e}");
    std::process::exit(1);
}
