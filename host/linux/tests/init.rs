//! `berth-init` as berth runs it: a binary of its own beside berth (and,
//! being this crate's, built by `cargo test --workspace` before the
//! end-to-end tests start containers with it).

use std::io::Write as _;
use std::process::{Command, Stdio};

const INIT: &str = env!("CARGO_BIN_EXE_berth-init");

#[test]
fn run_by_a_person_it_says_what_it_is_and_fails() {
    let out = Command::new(INIT).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("berth runs it, not people"), "{stderr}");
}

#[test]
fn a_config_that_is_not_one_is_refused_with_the_reason() {
    use std::io::Read as _;
    // berth speaks to its init over a socket on its stdin: the config one
    // way, the outcome back.
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = Command::new(INIT)
        .arg("init")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ours.write_all(b"not a config").unwrap();
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    ours.read_to_string(&mut answer).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{answer}");
    assert!(
        answer.contains("reading the container's config"),
        "{answer}"
    );
}
