//! `berth kubeconfig`: the daemon's kubeconfig, printed, its path, or
//! merged into the user's own (`~/.kube/config`) as kind and k3d do, so
//! `kubectl --context berth` reaches it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Print the kubeconfig's path instead of its contents
    /// (`KUBECONFIG=$(berth kubeconfig --path) kubectl get pods`).
    #[arg(long, conflicts_with = "merge")]
    path: bool,

    /// Add berth's cluster, user and context to ~/.kube/config (or the first
    /// file of $KUBECONFIG), replacing an earlier berth entry, and make it
    /// the current context.
    #[arg(long)]
    merge: bool,
}

pub fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<ExitCode> {
    let path = crate::api::pki::kubeconfig_path(&crate::home::berth_home());
    if args.path {
        println!("{}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (it is written when `berth daemon` starts)",
            path.display()
        )
    })?;
    if !args.merge {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let ours: Value = yaml_serde::from_str(&text)
        .with_context(|| format!("{} is not a kubeconfig", path.display()))?;
    let target = user_kubeconfig()?;
    let mut theirs: Value = match std::fs::read_to_string(&target) {
        Ok(text) if !text.trim().is_empty() => yaml_serde::from_str(&text)
            .with_context(|| format!("{} is not a kubeconfig", target.display()))?,
        Ok(_) => Value::Null,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
        Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
    };
    merge(&mut theirs, &ours);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let merged = yaml_serde::to_string(&theirs).context("writing YAML")?;
    crate::api::pki::write_private(&target, merged.as_bytes())?;
    eprintln!(
        "berth: context \"berth\" is in {} and is the current context",
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The kubeconfig kubectl reads first.
fn user_kubeconfig() -> anyhow::Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty())
        && let Some(first) = std::env::split_paths(&list).next()
    {
        return Ok(first);
    }
    let home = dirs::home_dir().context("no home directory for ~/.kube/config")?;
    Ok(home.join(".kube").join("config"))
}

/// Puts `ours`' entries (all named `berth`) into `theirs`, replacing
/// entries of the same name and leaving every other one as it was.
fn merge(theirs: &mut Value, ours: &Value) {
    if !theirs.is_object() {
        *theirs = serde_json::json!({"apiVersion": "v1", "kind": "Config", "preferences": {}});
    }
    for section in ["clusters", "users", "contexts"] {
        let mut entries: Vec<Value> = theirs[section].as_array().cloned().unwrap_or_default();
        for entry in ours[section].as_array().into_iter().flatten() {
            entries.retain(|e| e["name"] != entry["name"]);
            entries.push(entry.clone());
        }
        theirs[section] = Value::Array(entries);
    }
    theirs["current-context"] = ours["current-context"].clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_replaces_berth_and_keeps_the_rest() {
        let mut theirs: Value = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "prod", "cluster": {"server": "https://prod"}},
                         {"name": "berth", "cluster": {"server": "https://old"}}],
            "users": [{"name": "prod", "user": {}}],
            "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
            "current-context": "prod",
        });
        let ours = serde_json::json!({
            "clusters": [{"name": "berth", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "berth", "user": {"token": "t"}}],
            "contexts": [{"name": "berth", "context": {"cluster": "berth", "user": "berth"}}],
            "current-context": "berth",
        });
        merge(&mut theirs, &ours);
        let clusters = theirs["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[1]["cluster"]["server"], "https://127.0.0.1:6443");
        assert_eq!(theirs["users"].as_array().unwrap().len(), 2);
        assert_eq!(theirs["current-context"], "berth");
    }
}
