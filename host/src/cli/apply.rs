//! `berth apply` and `berth create`, as clients of the Kubernetes API.
//!
//! `apply` keeps its all-or-nothing promise over an API that writes one
//! object at a time: every object is first checked by the server with
//! `dryRun=All`, and only when all pass is any written. Objects in a
//! namespace the same files create cannot be checked before it exists, so
//! new namespaces are created first and deleted again (empty) if anything
//! fails its check.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::kube::runtime;
use crate::api::client::{call, call_as, error_of, path};
use crate::api::socket_path;
use crate::spec::Loaded;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest files or directories of them (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    // Checked here first, so a mistake is named by file and document.
    let loaded = crate::spec::load_paths(&args.files)?;
    if loaded.is_empty() {
        anyhow::bail!(
            "no objects to apply in {}",
            args.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for line in runtime()?.block_on(apply_all(&loaded))? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One object of the apply, and whether the server has it.
struct Item<'a> {
    loaded: &'a Loaded,
    /// The object's API path.
    path: String,
    /// The live object, if it exists.
    live: Option<Value>,
}

impl Item<'_> {
    fn kind(&self) -> &'static str {
        self.loaded.object.kind().as_str()
    }

    fn name(&self) -> &str {
        &self.loaded.object.metadata().name
    }

    /// `deployment.apps/web`, as kubectl names what it changed.
    fn label(&self) -> String {
        let kind = self.kind().to_ascii_lowercase();
        match crate::api::resources::by_kind(self.kind()).map(|r| r.group) {
            Some(group) if !group.is_empty() => format!("{kind}.{group}/{}", self.name()),
            _ => format!("{kind}/{}", self.name()),
        }
    }
}

/// Applies `loaded` in order (namespaces first); returns one line per
/// object saying what happened to it.
async fn apply_all(loaded: &[Loaded]) -> anyhow::Result<Vec<String>> {
    let socket = socket_path();
    let mut items: Vec<Item> = Vec::with_capacity(loaded.len());
    for l in loaded {
        let o = &l.object;
        let path = path(o.kind().as_str(), o.namespace(), Some(&o.metadata().name))?;
        if let Some(earlier) = items.iter().find(|i| i.path == path) {
            anyhow::bail!(
                "{}: {} {} is also in {}; nothing was applied",
                l.source,
                o.kind(),
                o.metadata().name,
                earlier.loaded.source
            );
        }
        let (status, reply) = call(&socket, "GET", &path, None).await?;
        let live = match status {
            200 => Some(reply),
            404 => None,
            _ => anyhow::bail!("{}: {}", l.source, error_of(&reply)),
        };
        items.push(Item {
            loaded: l,
            path,
            live,
        });
    }
    let (namespaces, others): (Vec<&Item>, Vec<&Item>) =
        items.iter().partition(|i| i.kind() == "Namespace");

    for item in &namespaces {
        write(item, true).await?;
    }
    let mut lines = Vec::with_capacity(items.len());
    let mut created: Vec<&Item> = Vec::new();
    for item in namespaces.iter().filter(|i| i.live.is_none()) {
        match write(item, false).await {
            Ok(outcome) => {
                lines.push(format!("{} {outcome}", item.label()));
                // Only one this apply made may be taken back: another
                // client may have made it meanwhile.
                if outcome == "created" {
                    created.push(item);
                }
            }
            Err(e) => {
                undo_namespaces(&created).await;
                return Err(e);
            }
        }
    }
    for item in &others {
        if let Err(e) = write(item, true).await {
            undo_namespaces(&created).await;
            return Err(e);
        }
    }
    // Everything passed its check: write for real.
    for item in namespaces
        .iter()
        .filter(|i| i.live.is_some())
        .chain(others.iter())
    {
        let outcome = write(item, false).await.with_context(|| {
            let done: Vec<&str> = lines.iter().map(String::as_str).collect();
            if done.is_empty() {
                "nothing was applied".to_owned()
            } else {
                format!("applied before this: {}", done.join(", "))
            }
        })?;
        lines.push(format!("{} {outcome}", item.label()));
    }
    Ok(lines)
}

/// Applies `item` as `kubectl apply --server-side --force-conflicts`
/// would, as the field manager `berth` (with `dry`, only asks the server
/// whether it would); returns `created`, `configured` or `unchanged`.
/// Server-side apply changes only what the manifest sets: labels others
/// added and what controllers keep (the revision annotation) stay.
async fn write(item: &Item<'_>, dry: bool) -> anyhow::Result<&'static str> {
    let dry_run = if dry { "&dryRun=All" } else { "" };
    let (status, reply) = call_as(
        &socket_path(),
        "PATCH",
        &format!("{}?fieldManager=berth&force=true{dry_run}", item.path),
        "application/apply-patch+yaml",
        Some(item.loaded.raw.clone()),
    )
    .await?;
    match (status, &item.live) {
        (201, _) => Ok("created"),
        (200, None) if dry => Ok("created"),
        // Made by someone else since it was read.
        (200, None) => Ok("configured"),
        (200, Some(live)) if dry || unchanged(&item.loaded.raw, live, &reply) => Ok("unchanged"),
        (200, Some(_)) => Ok("configured"),
        _ => {
            let what = if dry { "" } else { " (while writing)" };
            anyhow::bail!(
                "{}{what}: {}{}",
                item.loaded.source,
                error_of(&reply),
                if dry { "; nothing was applied" } else { "" }
            )
        }
    }
}

/// Whether an apply of `applied` left the object as it was: the values it
/// sets are the ones `live` had, and what berth manages is the same set of
/// fields (a field dropped from the manifest is removed, and changes that).
/// What others changed meanwhile (a controller's annotation, the
/// scheduler's node) is not this apply's doing.
fn unchanged(applied: &Value, live: &Value, now: &Value) -> bool {
    // stringData is never stored: it lands in data, where the comparison
    // must look.
    let mut applied = applied.clone();
    if let Some(strings) = applied
        .as_object_mut()
        .and_then(|a| a.remove("stringData"))
        .and_then(|v| v.as_object().cloned())
    {
        for (key, value) in strings {
            applied["data"][key] = value;
        }
    }
    project(&applied, live) == project(&applied, now) && managed(live) == managed(now)
}

/// `object`'s values at the paths `applied` sets.
fn project(applied: &Value, object: &Value) -> Value {
    match applied {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| (name.clone(), project(value, &object[name])))
                .collect(),
        ),
        _ => object.clone(),
    }
}

/// The fields berth's applies own, as the server records them.
fn managed(object: &Value) -> Option<&Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|entry| entry["manager"] == "berth" && entry["operation"] == "Apply")
        .map(|entry| &entry["fieldsV1"])
}

/// Deletes the namespaces an apply created before it found a reason to
/// stop: they are empty, since nothing else was written.
async fn undo_namespaces(created: &[&Item<'_>]) {
    let socket = socket_path();
    for item in created {
        if let Err(e) = call(&socket, "DELETE", &item.path, None).await {
            eprintln!(
                "berth: warning: could not delete the new namespace {}: {e:#}",
                item.name()
            );
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Only `deployment` (as `kubectl create deployment`).
    kind: String,
    name: String,
    #[arg(long)]
    image: String,
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
}

/// `berth create deployment NAME --image REF [--replicas N]`: the object
/// kubectl would make, created through the API (an existing one is an
/// error, as with kubectl).
pub fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    if crate::api::kind_of(&args.kind) != Some("Deployment") {
        anyhow::bail!(
            "berth create makes deployments (`berth create deployment NAME --image REF`); apply manifests for the rest"
        );
    }
    let container = args
        .image
        .rsplit('/')
        .next()
        .and_then(|last| last.split([':', '@']).next())
        .filter(|c| crate::spec::load::is_dns_label(c))
        .unwrap_or("app");
    let object = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": args.name, "namespace": args.namespace, "labels": {"app": args.name}},
        "spec": {
            "replicas": args.replicas,
            "selector": {"matchLabels": {"app": args.name}},
            "template": {
                "metadata": {"labels": {"app": args.name}},
                "spec": {"containers": [{"name": container, "image": args.image}]},
            },
        },
    });
    // Checked as a manifest would be, for the same precise messages.
    crate::spec::parse_str(&object.to_string(), &format!("deployment {}", args.name))?;
    let collection = path("Deployment", Some(&args.namespace), None)?;
    let (status, reply) =
        runtime()?.block_on(call(&socket_path(), "POST", &collection, Some(object)))?;
    if status != 201 && status != 200 {
        anyhow::bail!("{}", error_of(&reply));
    }
    println!("deployment.apps/{} created", args.name);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(replicas: u64, annotations: Value, fields: Value) -> Value {
        json!({
            "metadata": {
                "name": "web",
                "annotations": annotations,
                "managedFields": [{"manager": "berth", "operation": "Apply", "fieldsV1": fields}],
            },
            "spec": {"replicas": replicas, "paused": false},
        })
    }

    #[test]
    fn an_apply_is_unchanged_by_what_others_did_meanwhile() {
        let applied = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let fields = json!({"f:spec": {"f:replicas": {}}});
        let live = object(2, json!({}), fields.clone());
        // A controller's annotation, written between the read and the apply.
        let annotated = object(
            2,
            json!({"deployment.kubernetes.io/revision": "1"}),
            fields.clone(),
        );
        assert!(unchanged(&applied, &live, &annotated));
        // A value this apply sets.
        assert!(!unchanged(
            &applied,
            &live,
            &object(3, json!({}), fields.clone())
        ));
        // A field this apply no longer sets, so no longer berth's.
        let fewer = object(2, json!({}), json!({"f:spec": {}}));
        assert!(!unchanged(&applied, &live, &fewer));
    }
}
