//! The `berth` binary refuses bad input with one clear line and a non-zero
//! exit code: never a panic, a backtrace, or a server that starts anyway.

use std::path::Path;
use std::process::{Command, Output};

fn berth(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_HOME", home)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("running berth")
}

/// Runs `berth run FILE` and returns its stderr, asserting it failed cleanly.
fn refused(file: &Path, home: &Path) -> String {
    let out = berth(
        &["run", file.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        home,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "berth run {} succeeded",
        file.display()
    );
    assert!(
        out.stdout.is_empty(),
        "it printed a listen line: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "it panicked: {stderr}");
    assert!(
        !stderr.contains("stack backtrace"),
        "it printed a backtrace: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("berth: error: "), "{stderr}");
    assert!(
        stderr.contains(&*file.to_string_lossy()),
        "the file is not named: {stderr}"
    );
    stderr
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(&dir.path().join("nope.wasm"), dir.path());
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.wasm");
    std::fs::write(&file, "#!/bin/sh\necho hello\n").unwrap();
    let err = refused(&file, dir.path());
    assert!(err.contains("is not a WebAssembly file"), "{err}");
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.wasm");
    let module = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
    std::fs::write(&file, module).unwrap();
    let err = refused(&file, dir.path());
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[test]
fn a_component_without_the_handler_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nohandler.wasm");
    let component = wat::parse_str(
        r#"(component
             (core module $m (func (export "f")))
             (core instance $i (instantiate $m))
             (func (export "f") (canon lift (core func $i "f"))))"#,
    )
    .unwrap();
    std::fs::write(&file, component).unwrap();
    let err = refused(&file, dir.path());
    assert!(
        err.contains("does not export wasi:http/incoming-handler"),
        "{err}"
    );
    assert!(err.contains("it exports: f"), "{err}");
}

#[test]
fn a_truncated_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("truncated.wasm");
    let mut bytes = wat::parse_str(r#"(component (core module (func (export "f"))))"#).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&file, bytes).unwrap();
    let err = refused(&file, dir.path());
    assert!(err.contains("compiling"), "{err}");
}

#[test]
fn bad_flags_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["run", "x.wasm", "--memory", "64MB"], "use 64Mi"),
        (&["run", "x.wasm", "--dir", "/tmp"], "HOST:GUEST"),
        (
            &["run", "x.wasm", "--allow-outbound", "http://example.com"],
            "without a scheme",
        ),
        (&["run", "x.wasm", "--env", "NOEQUALS"], "expected K=V"),
    ];
    for (args, expected) in cases {
        let out = berth(args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
