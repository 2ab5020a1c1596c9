//! `berth rollout status|history|undo`, read from what kubectl reads: the
//! deployment's status, and the ReplicaSets it owns with their
//! `deployment.kubernetes.io/revision` annotations.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::kube::{fetch_as, list_as, runtime};
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
fn revisions(deployment: &Deployment, namespace: &str) -> anyhow::Result<Vec<(u64, ReplicaSet)>> {
    let uid = deployment.metadata.uid.as_deref();
    let mut found: Vec<(u64, ReplicaSet)> = list_as::<ReplicaSet>("ReplicaSet", namespace)?
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .filter_map(|rs| Some((annotation(&rs.metadata, REVISION)?.parse().ok()?, rs)))
        .collect();
    found.sort_by_key(|(revision, _)| *revision);
    Ok(found)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A pod template without the controller's hash label, as the deployment
/// holds it.
fn unhashed(template: Option<&PodTemplateSpec>) -> PodTemplateSpec {
    let mut template = template.cloned().unwrap_or_default();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    template
}

/// Where `kubectl rollout status` is: what it waits for, or `None` once
/// the rollout is complete.
fn progress(name: &str, deployment: &Deployment) -> Option<String> {
    let status = deployment.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let want = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let (updated, replicas, ready) = (
        n(status.updated_replicas),
        n(status.replicas),
        n(status.ready_replicas),
    );
    Some(
        if status.observed_generation != deployment.metadata.generation {
            "Waiting for deployment spec update to be observed...".to_owned()
        } else if updated < want {
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {updated} of {want} updated replicas are available..."
            )
        } else if replicas > updated {
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            )
        } else if ready < want {
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {ready} of {want} updated replicas are available..."
            )
        } else {
            return None;
        },
    )
}

pub fn rollout(command: RolloutCommand) -> anyhow::Result<ExitCode> {
    match command {
        RolloutCommand::History { target, namespace } => {
            let name = deployment_name(&target)?;
            let deployment: Deployment = fetch_as("Deployment", &namespace, name)?;
            println!("deployment.apps/{name}");
            println!("{:<9} {:<30} CHANGE-CAUSE", "REVISION", "IMAGES");
            for (revision, rs) in revisions(&deployment, &namespace)? {
                let images: Vec<&str> = rs
                    .spec
                    .iter()
                    .filter_map(|s| s.template.as_ref()?.spec.as_ref())
                    .flat_map(|s| &s.containers)
                    .filter_map(|c| c.image.as_deref())
                    .collect();
                println!(
                    "{revision:<9} {:<30} {}",
                    images.join(","),
                    annotation(&rs.metadata, CHANGE_CAUSE).unwrap_or("<none>")
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
                let deployment: Deployment = fetch_as("Deployment", &namespace, name)?;
                let Some(line) = progress(name, &deployment) else {
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
    let deployment: Deployment = fetch_as("Deployment", namespace, name)?;
    let spec = deployment.spec.clone().unwrap_or_default();
    if spec.paused == Some(true) {
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
    let template = unhashed(rs.spec.as_ref().and_then(|s| s.template.as_ref()));
    if template == spec.template {
        println!(
            "deployment.apps/{name} skipped rollback (current template already matches revision {revision})"
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The revision's annotations come back with its template (its
    // change-cause); the deployment keeps its own bookkeeping ones.
    let keep = |k: &str| k == REVISION || k == "kubectl.kubernetes.io/last-applied-configuration";
    let mut annotations: BTreeMap<String, String> = deployment
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| keep(k))
        .collect();
    annotations.extend(
        rs.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !keep(k)),
    );
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
