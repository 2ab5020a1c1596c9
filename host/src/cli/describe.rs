//! `berth describe KIND NAME`: an object's state in prose, laid out as
//! `kubectl describe` lays it out, then the events about it.

use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;
use serde_json::Value;

use super::kube::{age, fetch, list, runtime};
use crate::api::client::call;
use crate::api::{kind_of, socket_path};
use crate::controller::REVISION_ANNOTATION;

#[derive(Debug, Args)]
pub struct DescribeArgs {
    kind: String,
    name: String,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
}

pub fn describe(args: DescribeArgs) -> anyhow::Result<ExitCode> {
    let kind = kind_of(&args.kind).with_context(|| format!("berth has no kind {:?}", args.kind))?;
    let o = match fetch(kind, &args.namespace, &args.name) {
        // The default namespace exists whether or not it was declared.
        Err(_) if kind == "Namespace" && args.name == "default" => {
            serde_json::json!({"metadata": {"name": "default"}})
        }
        fetched => fetched?,
    };
    let meta = &o["metadata"];
    field(0, "Name", &args.name);
    if kind != "Namespace" {
        field(
            0,
            "Namespace",
            meta["namespace"].as_str().unwrap_or("default"),
        );
    }
    field(0, "Labels", &pairs(&meta["labels"]));
    field(0, "Annotations", &pairs(&meta["annotations"]));
    field(0, "CreationTimestamp", text(&meta["creationTimestamp"]));
    match kind {
        "Pod" => pod(&o),
        "Deployment" => deployment(&o, &args.namespace)?,
        "ReplicaSet" => replica_set(&o, &args.namespace)?,
        "Service" => service(&o, &args.namespace)?,
        "ConfigMap" => config_map(&o),
        "Secret" => secret(&o),
        "Namespace" => field(0, "Status", "Active"),
        _ => {}
    }
    if let Some(conditions) = o["status"]["conditions"].as_array() {
        println!("Conditions:");
        println!("  {:<16} {:<6} Reason", "Type", "Status");
        for c in conditions {
            println!(
                "  {:<16} {:<6} {}",
                text(&c["type"]),
                text(&c["status"]),
                c["reason"].as_str().or(c["message"].as_str()).unwrap_or("")
            );
        }
    }
    events(kind, &args.namespace, &args.name)
}

/// `Label:` and its value in kubectl's column, `depth` levels in.
fn field(depth: usize, label: &str, value: &str) {
    let indent = "  ".repeat(depth);
    let label = format!("{label}:");
    // kubectl's column, or two spaces past a label too long for it.
    let width = 20usize.saturating_sub(indent.len()).max(label.len() + 2);
    println!("{indent}{label:<width$}{value}");
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The items joined by `separator`, or `<none>`.
fn joined(items: &[String], separator: &str) -> String {
    if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(separator)
    }
}

/// `k=v,k=v`, or `<none>`.
fn pairs(v: &Value) -> String {
    let pairs: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    joined(&pairs, ",")
}

fn controlled_by(o: &Value) {
    let owner = &o["metadata"]["ownerReferences"][0];
    if let Some(name) = owner["name"].as_str() {
        field(
            0,
            "Controlled By",
            &format!("{}/{name}", text(&owner["kind"])),
        );
    }
}

fn pod(o: &Value) {
    let status = &o["status"];
    field(
        0,
        "Runtime",
        o["spec"]["runtimeClassName"]
            .as_str()
            .unwrap_or("(by image)"),
    );
    field(
        0,
        "Node",
        o["spec"]["nodeName"].as_str().unwrap_or("<none>"),
    );
    field(
        0,
        "Status",
        status["reason"]
            .as_str()
            .or(status["phase"].as_str())
            .unwrap_or("Pending"),
    );
    if let Some(message) = status["message"].as_str() {
        field(0, "Message", message);
    }
    controlled_by(o);
    println!("Containers:");
    for (i, c) in o["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let s = &status["containerStatuses"][i];
        container(c);
        if let Some(waiting) = s["state"]["waiting"].as_object() {
            let reason = waiting.get("reason").and_then(Value::as_str).unwrap_or("");
            field(2, "State", &format!("Waiting ({reason})"));
        } else if s["state"]["running"].is_object() {
            let since = text(&s["state"]["running"]["startedAt"]);
            field(2, "State", &format!("Running (since {since})"));
        } else if let Some(done) = s["state"]["terminated"].as_object() {
            let reason = done.get("reason").and_then(Value::as_str).unwrap_or("");
            let code = done.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
            field(
                2,
                "State",
                &format!("Terminated ({reason}, exit code {code})"),
            );
        }
        field(
            2,
            "Ready",
            &s["ready"].as_bool().unwrap_or(false).to_string(),
        );
        field(
            2,
            "Restart Count",
            &s["restartCount"].as_u64().unwrap_or(0).to_string(),
        );
        if let Some(endpoint) = status["endpoints"][c["name"].as_str().unwrap_or("")].as_str() {
            field(2, "Endpoint", &format!("http://{endpoint}/"));
        }
    }
    volumes(&o["spec"]["volumes"]);
}

/// A container's spec: image, ports, resources, probes, environment.
fn container(c: &Value) {
    println!("  {}:", text(&c["name"]));
    field(2, "Image", text(&c["image"]));
    let ports: Vec<String> = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}",
                p["containerPort"],
                p["protocol"].as_str().unwrap_or("TCP")
            )
        })
        .collect();
    if !ports.is_empty() {
        field(2, "Ports", &ports.join(", "));
    }
    if let Some(command) = c["command"].as_array() {
        field(2, "Command", &words(command));
    }
    if let Some(args) = c["args"].as_array() {
        field(2, "Args", &words(args));
    }
    for (label, key) in [("Limits", "limits"), ("Requests", "requests")] {
        if let Some(amounts) = c["resources"][key].as_object()
            && !amounts.is_empty()
        {
            field(2, label, "");
            for (resource, amount) in amounts {
                let amount = amount
                    .as_str()
                    .map_or_else(|| amount.to_string(), str::to_owned);
                field(3, resource, &amount);
            }
        }
    }
    for (label, key) in [
        ("Startup", "startupProbe"),
        ("Liveness", "livenessProbe"),
        ("Readiness", "readinessProbe"),
    ] {
        if c[key].is_object() {
            field(2, label, &probe(&c[key]));
        }
    }
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let from = &e["valueFrom"];
            let value = if let Some(value) = e["value"].as_str() {
                value.to_owned()
            } else if from["configMapKeyRef"].is_object() {
                let r = &from["configMapKeyRef"];
                format!(
                    "<set to the key '{}' of config map '{}'>",
                    text(&r["key"]),
                    text(&r["name"])
                )
            } else if from["secretKeyRef"].is_object() {
                let r = &from["secretKeyRef"];
                format!(
                    "<set to the key '{}' in secret '{}'>",
                    text(&r["key"]),
                    text(&r["name"])
                )
            } else {
                String::new()
            };
            (text(&e["name"]).to_owned(), value)
        })
        .collect();
    let env_from: Vec<String> = c["envFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let (kind, r) = if f["configMapRef"].is_object() {
                ("ConfigMap", &f["configMapRef"])
            } else {
                ("Secret", &f["secretRef"])
            };
            r["name"].as_str().map(|name| format!("{name} {kind}"))
        })
        .collect();
    if !env_from.is_empty() {
        field(2, "Environment Variables from", "");
        for from in env_from {
            println!("      {from}");
        }
    }
    if env.is_empty() {
        field(2, "Environment", "<none>");
    } else {
        field(2, "Environment", "");
        for (name, value) in env {
            field(3, &name, &value);
        }
    }
    let mounts: Vec<String> = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mode = if m["readOnly"] == true { "ro" } else { "rw" };
            format!(
                "{} from {} ({mode})",
                text(&m["mountPath"]),
                text(&m["name"])
            )
        })
        .collect();
    if !mounts.is_empty() {
        field(2, "Mounts", "");
        for m in mounts {
            println!("      {m}");
        }
    }
}

fn words(list: &[Value]) -> String {
    list.iter()
        .map(|w| w.as_str().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// kubectl's one-line probe: `http-get http://:8080/healthz delay=0s
/// timeout=1s period=10s #success=1 #failure=3`, with Kubernetes' defaults
/// where the spec left them out.
fn probe(p: &Value) -> String {
    let action = if p["httpGet"].is_object() {
        let h = &p["httpGet"];
        let scheme = h["scheme"].as_str().unwrap_or("HTTP").to_ascii_lowercase();
        format!(
            "http-get {scheme}://:{}{}",
            port(&h["port"]),
            h["path"].as_str().unwrap_or("/")
        )
    } else if p["tcpSocket"].is_object() {
        format!("tcp-socket :{}", port(&p["tcpSocket"]["port"]))
    } else if let Some(command) = p["exec"]["command"].as_array() {
        format!("exec [{}]", words(command))
    } else {
        "<unknown>".to_owned()
    };
    let n = |key: &str, default: u64| p[key].as_u64().unwrap_or(default);
    format!(
        "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
        n("initialDelaySeconds", 0),
        n("timeoutSeconds", 1),
        n("periodSeconds", 10),
        n("successThreshold", 1),
        n("failureThreshold", 3)
    )
}

/// A port given as a number or a name.
fn port(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn volumes(list: &Value) {
    let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
        return;
    };
    println!("Volumes:");
    for v in list {
        println!("  {}:", text(&v["name"]));
        let (kind, detail) = if let Some(name) = v["configMap"]["name"].as_str() {
            ("ConfigMap", format!("name {name}"))
        } else if let Some(name) = v["secret"]["secretName"].as_str() {
            ("Secret", format!("name {name}"))
        } else if let Some(path) = v["hostPath"]["path"].as_str() {
            ("HostPath", format!("path {path}"))
        } else if v["emptyDir"].is_object() {
            (
                "EmptyDir",
                "a directory that lives as long as the pod".to_owned(),
            )
        } else {
            ("<unknown>", String::new())
        };
        field(2, "Type", kind);
        if !detail.is_empty() {
            field(2, "Source", &detail);
        }
    }
}

/// The pod template of a Deployment or ReplicaSet.
fn template(t: &Value) {
    println!("Pod Template:");
    field(1, "Labels", &pairs(&t["metadata"]["labels"]));
    println!("  Containers:");
    for c in t["spec"]["containers"].as_array().into_iter().flatten() {
        container(c);
    }
    volumes(&t["spec"]["volumes"]);
}

fn selector(o: &Value) -> String {
    pairs(&o["spec"]["selector"]["matchLabels"])
}

fn deployment(o: &Value, namespace: &str) -> anyhow::Result<()> {
    let status = &o["status"];
    let n = |k: &str| status[k].as_u64().unwrap_or(0);
    field(0, "Selector", &selector(o));
    field(
        0,
        "Replicas",
        &format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            o["spec"]["replicas"].as_u64().unwrap_or(1),
            n("updatedReplicas"),
            n("replicas"),
            n("availableReplicas"),
            n("unavailableReplicas")
        ),
    );
    let strategy = &o["spec"]["strategy"];
    let kind = strategy["type"].as_str().unwrap_or("RollingUpdate");
    field(0, "StrategyType", kind);
    if kind == "RollingUpdate" {
        // Kubernetes' defaults where the spec gave none.
        let rolling = &strategy["rollingUpdate"];
        let get = |k: &str| {
            if rolling[k].is_null() {
                "25%".to_owned()
            } else {
                port(&rolling[k])
            }
        };
        field(
            0,
            "RollingUpdateStrategy",
            &format!(
                "{} max unavailable, {} max surge",
                get("maxUnavailable"),
                get("maxSurge")
            ),
        );
    }
    template(&o["spec"]["template"]);
    // The replica sets it owns: the newest revision is the one being
    // rolled out (or done); the others are scaled down or on their way.
    let name = text(&o["metadata"]["name"]);
    let mut owned: Vec<Value> = list("ReplicaSet", namespace)?
        .into_iter()
        .filter(|rs| rs["metadata"]["ownerReferences"][0]["name"] == name)
        .collect();
    let revision = |rs: &Value| {
        rs["metadata"]["annotations"][REVISION_ANNOTATION]
            .as_str()
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0)
    };
    owned.sort_by_key(|rs| std::cmp::Reverse(revision(rs)));
    let line = |rs: &Value| {
        format!(
            "{} ({}/{} replicas created)",
            text(&rs["metadata"]["name"]),
            rs["status"]["replicas"].as_u64().unwrap_or(0),
            rs["spec"]["replicas"].as_u64().unwrap_or(0)
        )
    };
    let old: Vec<String> = owned
        .iter()
        .skip(1)
        .filter(|rs| rs["status"]["replicas"].as_u64().unwrap_or(0) > 0)
        .map(line)
        .collect();
    field(0, "OldReplicaSets", &joined(&old, ", "));
    field(
        0,
        "NewReplicaSet",
        &owned.first().map_or_else(|| "<none>".to_owned(), line),
    );
    Ok(())
}

fn replica_set(o: &Value, namespace: &str) -> anyhow::Result<()> {
    field(0, "Selector", &selector(o));
    controlled_by(o);
    field(
        0,
        "Replicas",
        &format!(
            "{} current / {} desired",
            o["status"]["replicas"].as_u64().unwrap_or(0),
            o["spec"]["replicas"].as_u64().unwrap_or(1)
        ),
    );
    let name = text(&o["metadata"]["name"]);
    let (mut running, mut waiting, mut succeeded, mut failed) = (0, 0, 0, 0);
    for pod in list("Pod", namespace)?
        .iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["name"] == name)
    {
        match pod["status"]["phase"].as_str() {
            Some("Running") => running += 1,
            Some("Succeeded") => succeeded += 1,
            Some("Failed") => failed += 1,
            _ => waiting += 1,
        }
    }
    field(
        0,
        "Pods Status",
        &format!("{running} Running / {waiting} Waiting / {succeeded} Succeeded / {failed} Failed"),
    );
    template(&o["spec"]["template"]);
    Ok(())
}

fn service(o: &Value, namespace: &str) -> anyhow::Result<()> {
    let spec = &o["spec"];
    field(0, "Selector", &pairs(&spec["selector"]));
    field(0, "Type", spec["type"].as_str().unwrap_or("ClusterIP"));
    // Endpoints: the ready pods it selects, the ones the router sends to.
    let wanted = spec["selector"].as_object().cloned().unwrap_or_default();
    let ready: Vec<String> = if wanted.is_empty() {
        Vec::new()
    } else {
        list("Pod", namespace)?
            .iter()
            .filter(|p| {
                wanted.iter().all(|(k, v)| &p["metadata"]["labels"][k] == v)
                    && p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .map(|p| text(&p["metadata"]["name"]).to_owned())
            .collect()
    };
    for p in spec["ports"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("<unset>");
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        field(0, "Port", &format!("{name}  {}/{protocol}", p["port"]));
        let target = if p["targetPort"].is_null() {
            p["port"].to_string()
        } else {
            port(&p["targetPort"])
        };
        field(0, "TargetPort", &format!("{target}/{protocol}"));
        if let Some(node_port) = p["nodePort"].as_u64() {
            field(0, "NodePort", &format!("{name}  {node_port}/{protocol}"));
        }
        field(0, "Endpoints", &joined(&ready, ","));
    }
    field(
        0,
        "Session Affinity",
        spec["sessionAffinity"].as_str().unwrap_or("None"),
    );
    Ok(())
}

fn config_map(o: &Value) {
    println!("\nData\n====");
    for (key, value) in o["data"].as_object().into_iter().flatten() {
        println!("{key}:\n----\n{}\n", text(value));
    }
    let binary: Vec<(&String, &Value)> =
        o["binaryData"].as_object().into_iter().flatten().collect();
    if !binary.is_empty() {
        println!("\nBinaryData\n====");
        for (key, value) in binary {
            println!("{key}: {} bytes", decoded_len(text(value)));
        }
    }
}

/// A secret's values are not printed, only their sizes, as kubectl does.
fn secret(o: &Value) {
    println!("\nType:  {}", o["type"].as_str().unwrap_or("Opaque"));
    println!("\nData\n====");
    for (key, value) in o["data"].as_object().into_iter().flatten() {
        println!("{key}:  {} bytes", decoded_len(text(value)));
    }
}

fn decoded_len(base64: &str) -> usize {
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_or(0, |bytes| bytes.len())
}

fn events(kind: &str, namespace: &str, name: &str) -> anyhow::Result<ExitCode> {
    let path = crate::api::client::path("Event", Some(namespace), None)?
        + "?fieldSelector="
        + &crate::api::client::query_value(&format!(
            "involvedObject.kind={kind},involvedObject.name={name}"
        ));
    let (code, events) = runtime()?.block_on(call(&socket_path(), "GET", &path, None))?;
    let events: Vec<Value> = if code == 200 {
        events["items"].as_array().cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    if events.is_empty() {
        field(0, "Events", "<none>");
    } else {
        println!("Events:");
        println!("  {:<8} {:<18} {:<6} Message", "Type", "Reason", "Age");
        for e in events {
            println!(
                "  {:<8} {:<18} {:<6} {}",
                text(&e["type"]),
                text(&e["reason"]),
                age(text(&e["lastTimestamp"])),
                text(&e["message"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
