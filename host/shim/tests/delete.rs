//! containerd runs `containerd-shim-berth-v1 … delete` in a bundle whose
//! shim died, and reads a DeleteResponse from its stdout. (That the test
//! exists also makes `cargo test --workspace` build the shim for the
//! end-to-end tests under containerd, in tests/tests/shim.rs.)

use containerd_shim::protos::protobuf::Message as _;
use containerd_shim::protos::shim::shim::DeleteResponse;

#[test]
fn delete_of_a_dead_shim_reports_it_killed() {
    let bundle = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_containerd-shim-berth-v1"))
        .args(["-namespace", "default", "-id", "gone", "-address"])
        .arg(bundle.path().join("containerd.sock"))
        .arg("delete")
        .current_dir(bundle.path())
        .env("TTRPC_ADDRESS", bundle.path().join("containerd.sock.ttrpc"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response = DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(response.exit_status, 137);
    assert!(response.exited_at.seconds > 0);
}
