//! The examples' manifests are valid Kubernetes: the official schema
//! (kubernetes-validate from PyPI, strict: no field Kubernetes does not
//! know), so the same YAML goes to a real cluster unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifests(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            manifests(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn every_example_manifest_validates_against_the_official_kubernetes_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let validate = root.join("target/test-venv/bin/kubernetes-validate");
    assert!(
        validate.exists(),
        "{} is missing: tests/prepare.sh installs kubernetes-validate into the tests' venv",
        validate.display()
    );
    let mut found = Vec::new();
    manifests(&root.join("examples"), &mut found);
    found.sort();
    assert!(
        found.iter().any(|p| p.ends_with("kubernetes/hello.yaml")),
        "{found:?}"
    );
    let out = Command::new(&validate)
        .args(["--strict", "--kubernetes-version", "1.32.0"])
        .args(&found)
        .output()
        .expect("running kubernetes-validate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every file was read and every object in it checked.
    let said = String::from_utf8_lossy(&out.stdout);
    for path in &found {
        assert!(
            said.contains(&*path.to_string_lossy()),
            "{} not validated: {said}",
            path.display()
        );
    }
}
