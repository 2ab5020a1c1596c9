//! Compiles the guests in `guests/` for wasm32-wasip2, so tests name them by
//! constant and a missing or broken guest fails the build instead of skipping.

use std::path::PathBuf;
use std::process::Command;

/// Package names; cargo names a cdylib's output with underscores (`tool`
/// is a binary: a command component).
/// examples/shop's guests too, for the tests that run the shop.
const GUESTS: &[&str] = &[
    "hello",
    "echo",
    "misbehave",
    "legacy-hello",
    "tool",
    "worker",
    "shop-front",
    "shop-api",
    "shop-stock",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir.join("../guests");
    // A target dir of their own: the outer build holds the lock on ours.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = target_root(&out).join("guests");

    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.lock").display()
    );
    for guest in GUESTS {
        println!("cargo:rerun-if-changed={}", guests.join(guest).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&guests)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(GUESTS.iter().flat_map(|g| ["-p", g]))
        .env("CARGO_TARGET_DIR", &target_dir);
    // The outer build's flags and wrappers (clippy's, under `cargo clippy`)
    // are for the host crates, not for the wasm guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("running cargo to build the guests");
    if !status.success() {
        panic!(
            "building the wasm guests in {} failed; is the target installed? \
             (`rustup target add wasm32-wasip2`)",
            guests.display()
        );
    }
    let wasm_dir = target_dir.join("wasm32-wasip2/release");
    // A library's file is named with underscores, a binary's as it is.
    for guest in GUESTS {
        let library = wasm_dir.join(format!("{}.wasm", guest.replace('-', "_")));
        let binary = wasm_dir.join(format!("{guest}.wasm"));
        assert!(
            library.exists() || binary.exists(),
            "guest {guest} was not built at {}",
            library.display()
        );
    }
    println!("cargo:rustc-env=BERTH_GUESTS_DIR={}", wasm_dir.display());
}

/// `target/` from `target/<profile>/build/<pkg>/out`.
fn target_root(out: &std::path::Path) -> PathBuf {
    out.ancestors()
        .nth(4)
        .expect("OUT_DIR is inside the target directory")
        .to_owned()
}
