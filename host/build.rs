//! Link settings for the `berth` binary.

fn main() {
    // berth execs itself for every container it starts (`berth __init`),
    // and a PIE this size carries ~60,000 relative relocations: 1.5 MB
    // of .rela.dyn read and applied at every start. Packed (DT_RELR, glibc
    // 2.36+ and binutils 2.38+) they are a few kilobytes.
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
