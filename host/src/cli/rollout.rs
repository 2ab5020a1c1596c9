//! `berth rollout status|history|undo`, read from what kubectl reads: the
//! deployment's status, and the ReplicaSets it owns with their
//! `deployment.kubernetes.io/revision` annotations.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::kube::{fetch, list_in, runtime};
use crate::api::client::{call_as, error_of, path};
use crate::api::{kind_of, socket_path};

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Wait until the deployment's rollout is complete.
    Status {
        target: String,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// List the deployment's revisions (those whose ReplicaSets are kept:
    /// spec.revisionHistoryLimit).
    History {
        target: String,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
    },
    /// Go back to an earlier revision (by default the previous one).
    Undo {
        target: String,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
        #[arg(long)]
        to_revision: Option<u64>,
    },
}

/// `deployment/NAME`, `deploy/NAME` or `NAME`.
fn deployment_name(target: &str) -> anyhow::Result<&str> {
    match target.split_once('/') {
        Some((kind, name)) if kind_of(kind) == Some("Deployment") => Ok(name),
        Some((kind, _)) => anyhow::bail!("rollouts are for deployments, not {kind}"),
        None => Ok(target),
    }
}

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The label the controller adds to each ReplicaSet's template.
const HASH_LABEL: &str = "pod-template-hash";

/// The deployment's ReplicaSets by revision, oldest first.
fn revisions(deployment: &Value, namespace: &str) -> anyhow::Result<Vec<(u64, Value)>> {
    let uid = &deployment["metadata"]["uid"];
    let mut found: Vec<(u64, Value)> = list_in("ReplicaSet", Some(namespace), None)?
        .into_iter()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|owners| owners.iter().any(|o| &o["uid"] == uid))
        })
        .filter_map(|rs| {
            let revision = rs["metadata"]["annotations"][REVISION]
                .as_str()?
                .parse()
                .ok()?;
            Some((revision, rs))
        })
        .collect();
    found.sort_by_key(|(revision, _)| *revision);
    Ok(found)
}

/// A pod template without the controller's hash label, as the deployment
/// holds it.
fn unhashed(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
    }
    template
}

pub fn rollout(command: RolloutCommand) -> anyhow::Result<ExitCode> {
    match command {
        RolloutCommand::History { target, namespace } => {
            let name = deployment_name(&target)?;
            let deployment = fetch("Deployment", &namespace, name)?;
            println!("deployment.apps/{name}");
            println!("{:<9} {:<30} CHANGE-CAUSE", "REVISION", "IMAGES");
            for (revision, rs) in revisions(&deployment, &namespace)? {
                let images: Vec<&str> = rs["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["image"].as_str())
                    .collect();
                println!(
                    "{revision:<9} {:<30} {}",
                    images.join(","),
                    rs["metadata"]["annotations"][CHANGE_CAUSE]
                        .as_str()
                        .unwrap_or("<none>")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Undo {
            target,
            namespace,
            to_revision,
        } => undo(deployment_name(&target)?, &namespace, to_revision),
        RolloutCommand::Status {
            target,
            namespace,
            timeout,
        } => {
            let name = deployment_name(&target)?;
            let deadline = std::time::Instant::now() + timeout;
            let mut last = String::new();
            loop {
                let deployment = fetch("Deployment", &namespace, name)?;
                let s = &deployment["status"];
                let n = |k: &str| s[k].as_u64().unwrap_or(0);
                let want = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
                let observed = s["observedGeneration"] == deployment["metadata"]["generation"];
                let line = if !observed {
                    "Waiting for deployment spec update to be observed...".to_owned()
                } else if n("updatedReplicas") < want {
                    format!(
                        "Waiting for deployment \"{name}\" rollout to finish: {} of {want} updated replicas are available...",
                        n("updatedReplicas")
                    )
                } else if n("replicas") > n("updatedReplicas") {
                    format!(
                        "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
                        n("replicas") - n("updatedReplicas")
                    )
                } else if n("readyReplicas") < want {
                    format!(
                        "Waiting for deployment \"{name}\" rollout to finish: {} of {want} updated replicas are available...",
                        n("readyReplicas")
                    )
                } else {
                    println!("deployment \"{name}\" successfully rolled out");
                    return Ok(ExitCode::SUCCESS);
                };
                if line != last {
                    println!("{line}");
                    last = line;
                }
                if std::time::Instant::now() > deadline {
                    anyhow::bail!("timed out waiting for the rollout of {name}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// As `kubectl rollout undo`: the deployment gets the pod template (and
/// the annotations) of the ReplicaSet of the revision asked for, or of the
/// one before the newest; the controller then rolls it out as a new
/// revision.
fn undo(name: &str, namespace: &str, to_revision: Option<u64>) -> anyhow::Result<ExitCode> {
    let deployment = fetch("Deployment", namespace, name)?;
    if deployment["spec"]["paused"] == true {
        anyhow::bail!(
            "deployment {name} is paused: resume it first (kubectl rollout resume deployment/{name})"
        );
    }
    let revisions = revisions(&deployment, namespace)?;
    let (revision, rs) =
        match to_revision {
            Some(n) => revisions
                .iter()
                .find(|(r, _)| *r == n)
                .with_context(|| format!("deployment {name} has no revision {n}"))?,
            None => revisions.iter().rev().nth(1).with_context(|| {
                format!("deployment {name} has no earlier revision to go back to")
            })?,
        };
    let template = unhashed(&rs["spec"]["template"]);
    if template == deployment["spec"]["template"] {
        println!(
            "deployment.apps/{name} skipped rollback (current template already matches revision {revision})"
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The revision's annotations come back with its template (its
    // change-cause); the deployment keeps its own bookkeeping ones.
    let mut annotations = serde_json::Map::new();
    let keep = |k: &str| k == REVISION || k == "kubectl.kubernetes.io/last-applied-configuration";
    for (k, v) in deployment["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if keep(k) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in rs["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if !keep(k) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let patch = json!([
        {"op": "add", "path": "/spec/template", "value": template},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ]);
    let (status, reply) = runtime()?.block_on(call_as(
        &socket_path(),
        "PATCH",
        &path("Deployment", Some(namespace), Some(name))?,
        "application/json-patch+json",
        Some(patch),
    ))?;
    if status != 200 {
        anyhow::bail!("{}", error_of(&reply));
    }
    println!("deployment.apps/{name} rolled back to revision {revision}");
    Ok(ExitCode::SUCCESS)
}
