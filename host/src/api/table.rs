//! Server-side printing: `meta.k8s.io/v1` Table, what `kubectl get` asks
//! for, with the columns kube-apiserver prints for each kind (priority 1
//! columns are the ones `-o wide` adds).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// `(name, type, priority, description)`.
type Column = (&'static str, &'static str, u8, &'static str);

const NAME: Column = (
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => vec![
            NAME,
            (
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            ("IP", "string", 1, "IP address allocated to the pod."),
            (
                "Node",
                "string",
                1,
                "Name of the Node this pod is assigned to.",
            ),
            (
                "Nominated Node",
                "string",
                1,
                "Name of the node nominated by the scheduler.",
            ),
            (
                "Readiness Gates",
                "string",
                1,
                "The readiness gates of this pod.",
            ),
        ],
        "Deployment" => vec![
            NAME,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            (
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            (
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            (
                "Selector",
                "string",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        "ReplicaSet" => vec![
            NAME,
            (
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired replicas.",
            ),
            (
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            (
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set.",
            ),
            AGE,
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            (
                "Selector",
                "string",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        "Service" => vec![
            NAME,
            ("Type", "string", 0, "The type of the service."),
            ("Cluster-IP", "string", 0, "The cluster IP of the service."),
            (
                "External-IP",
                "string",
                0,
                "The external IP of the service.",
            ),
            ("Port(s)", "string", 0, "The ports of the service."),
            AGE,
            (
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        "ConfigMap" => vec![
            NAME,
            ("Data", "string", 0, "The number of keys in the config map."),
            AGE,
        ],
        "NetworkPolicy" => vec![
            NAME,
            (
                "Pod-Selector",
                "string",
                0,
                "Selects the pods to which this NetworkPolicy object applies.",
            ),
            AGE,
        ],
        "Secret" => vec![
            NAME,
            ("Type", "string", 0, "The type of the secret."),
            ("Data", "string", 0, "The number of keys in the secret."),
            AGE,
        ],
        "Namespace" => vec![
            NAME,
            ("Status", "string", 0, "The status of the namespace."),
            AGE,
        ],
        "Node" => vec![
            NAME,
            ("Status", "string", 0, "The status of the node."),
            ("Roles", "string", 0, "The roles of the node."),
            AGE,
            (
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
        ],
        "Event" => vec![
            (
                "Last Seen",
                "string",
                0,
                "Time when this event was last observed.",
            ),
            ("Type", "string", 0, "Type of this event."),
            (
                "Reason",
                "string",
                0,
                "Reason why this event was generated.",
            ),
            ("Object", "string", 0, "The object this event is about."),
            ("Message", "string", 0, "A human-readable description."),
        ],
        "ServiceAccount" => vec![
            NAME,
            (
                "Secrets",
                "string",
                0,
                "Secrets is the list of secrets allowed to be used by pods running using this ServiceAccount.",
            ),
            AGE,
        ],
        "Endpoints" => vec![
            NAME,
            (
                "Endpoints",
                "string",
                0,
                "Endpoints is the list of domain names or IP addresses.",
            ),
            AGE,
        ],
        "EndpointSlice" => vec![
            NAME,
            (
                "AddressType",
                "string",
                0,
                "The IP protocol for this slice.",
            ),
            ("Ports", "string", 0, "The ports for this slice."),
            (
                "Endpoints",
                "string",
                0,
                "The addresses of the endpoints of this slice.",
            ),
            AGE,
        ],
        "HorizontalPodAutoscaler" => vec![
            NAME,
            ("Reference", "string", 0, "reference to the target object"),
            (
                "Targets",
                "string",
                0,
                "the current and target metric values",
            ),
            (
                "MinPods",
                "string",
                0,
                "the lower limit for the number of pods",
            ),
            (
                "MaxPods",
                "string",
                0,
                "the upper limit for the number of pods",
            ),
            ("Replicas", "string", 0, "current number of replicas"),
            AGE,
        ],
        "StatefulSet" => vec![
            NAME,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            AGE,
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
        ],
        "Job" => vec![
            NAME,
            ("Status", "string", 0, "Status of the job."),
            (
                "Completions",
                "string",
                0,
                "The number of pods which reached phase Succeeded.",
            ),
            (
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
            ),
            AGE,
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            (
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count.",
            ),
        ],
        "CronJob" => vec![
            NAME,
            (
                "Schedule",
                "string",
                0,
                "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
            ),
            (
                "Timezone",
                "string",
                0,
                "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
            ),
            (
                "Suspend",
                "boolean",
                0,
                "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
            ),
            (
                "Active",
                "integer",
                0,
                "A list of pointers to currently running jobs.",
            ),
            (
                "Last Schedule",
                "string",
                0,
                "Information when was the last time the job was successfully scheduled.",
            ),
            AGE,
            (
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            (
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            (
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count.",
            ),
        ],
        "Ingress" => vec![
            NAME,
            (
                "Class",
                "string",
                0,
                "The name of the IngressClass resource that should be used for this Ingress.",
            ),
            (
                "Hosts",
                "string",
                0,
                "Hosts that incoming requests are matched against before the ingress rule",
            ),
            (
                "Address",
                "string",
                0,
                "Address is a list containing ingress points for the load-balancer",
            ),
            (
                "Ports",
                "string",
                0,
                "Ports of TLS configurations that open",
            ),
            AGE,
        ],
        "IngressClass" => vec![
            NAME,
            (
                "Controller",
                "string",
                0,
                "Controller that is responsible for handling this class",
            ),
            (
                "Parameters",
                "string",
                0,
                "A reference to a resource with additional parameters",
            ),
            AGE,
        ],
        "PersistentVolumeClaim" => vec![
            NAME,
            (
                "Status",
                "string",
                0,
                "Phase represents the current phase of PersistentVolumeClaim.",
            ),
            (
                "Volume",
                "string",
                0,
                "The binding reference to the PersistentVolume backing this claim.",
            ),
            (
                "Capacity",
                "string",
                0,
                "The actual resources of the underlying volume.",
            ),
            (
                "Access Modes",
                "string",
                0,
                "The actual access modes the volume backing the PVC has.",
            ),
            (
                "StorageClass",
                "string",
                0,
                "The name of the StorageClass required by the claim.",
            ),
            (
                "VolumeAttributesClass",
                "string",
                0,
                "The name of the VolumeAttributesClass the PVC is using.",
            ),
            AGE,
            (
                "VolumeMode",
                "string",
                1,
                "What type of volume is required by the claim.",
            ),
        ],
        "PersistentVolume" => vec![
            NAME,
            (
                "Capacity",
                "string",
                0,
                "The persistent volume's resources and capacity.",
            ),
            (
                "Access Modes",
                "string",
                0,
                "All ways the volume can be mounted.",
            ),
            (
                "Reclaim Policy",
                "string",
                0,
                "What happens to a persistent volume when released from its claim.",
            ),
            (
                "Status",
                "string",
                0,
                "Phase indicates if a volume is available, bound to a claim, or released by a claim.",
            ),
            (
                "Claim",
                "string",
                0,
                "Part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
            ),
            (
                "StorageClass",
                "string",
                0,
                "The name of StorageClass to which this persistent volume belongs.",
            ),
            (
                "VolumeAttributesClass",
                "string",
                0,
                "The name of the VolumeAttributesClass this persistent volume belongs to.",
            ),
            (
                "Reason",
                "string",
                0,
                "The reason why this volume is in this phase.",
            ),
            AGE,
            (
                "VolumeMode",
                "string",
                1,
                "Defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
            ),
        ],
        "StorageClass" => vec![
            NAME,
            (
                "Provisioner",
                "string",
                0,
                "Indicates the type of the provisioner.",
            ),
            (
                "ReclaimPolicy",
                "string",
                0,
                "Indicates the type of the reclaim policy.",
            ),
            (
                "VolumeBindingMode",
                "string",
                0,
                "Indicates how PersistentVolumeClaims should be provisioned and bound.",
            ),
            (
                "AllowVolumeExpansion",
                "string",
                0,
                "Indicates whether the storage class allow volume expand.",
            ),
            AGE,
        ],
        "RuntimeClass" => vec![
            NAME,
            ("Handler", "string", 0, "The handler of the runtime class."),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

/// kubectl's age: `45s`, `12m`, `5h`, `3d`, as kube-apiserver prints it.
pub fn age(timestamp: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339(timestamp) else {
        return "<unknown>".into();
    };
    human_duration(
        SystemTime::now()
            .duration_since(then)
            .unwrap_or(Duration::ZERO),
    )
}

/// A duration as kubectl prints ages and a job's duration.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..120 => format!("{secs}s"),
        120..600 => format!("{}m{}s", secs / 60, secs % 60),
        600..10_800 => format!("{}m", secs / 60),
        10_800..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn container_list(spec: &Value, field: &str) -> String {
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| text(&c[field]).to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn selector_text(selector: &Value) -> String {
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let key = text(&e["key"]);
        terms.push(match text(&e["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    if terms.is_empty() {
        "<none>".into()
    } else {
        terms.join(",")
    }
}

/// Access modes as kubectl abbreviates them: `RWO,RWX`.
fn access_modes(modes: &Value) -> String {
    modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(match m.as_str()? {
                "ReadWriteOnce" => "RWO",
                "ReadOnlyMany" => "ROX",
                "ReadWriteMany" => "RWX",
                "ReadWriteOncePod" => "RWOP",
                other => other,
            })
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What a pod's init containers add to its row, as kubectl's printer
/// reads them: sidecars count among its containers (and its ready ones
/// once started), restarts add up, and while one has yet to complete the
/// status is `Init:` and how far it got or what stops it.
#[derive(Default)]
struct InitProgress {
    sidecars: usize,
    ready: usize,
    restarts: u64,
    reason: Option<String>,
}

fn init_progress(pod: &Value) -> InitProgress {
    let specs = pod["spec"]["initContainers"].as_array();
    let sidecar = |name: &Value| {
        specs
            .into_iter()
            .flatten()
            .any(|c| c["name"] == *name && c["restartPolicy"] == "Always")
    };
    let mut progress = InitProgress {
        sidecars: specs.map_or(0, |s| {
            s.iter().filter(|c| c["restartPolicy"] == "Always").count()
        }),
        ..InitProgress::default()
    };
    let total = specs.map_or(0, Vec::len);
    let statuses = pod["status"]["initContainerStatuses"].as_array();
    for (i, s) in statuses.into_iter().flatten().enumerate() {
        progress.restarts += s["restartCount"].as_u64().unwrap_or(0);
        let terminated = &s["state"]["terminated"];
        let waiting = s["state"]["waiting"]["reason"].as_str().unwrap_or_default();
        if terminated["exitCode"] == 0 {
            continue;
        }
        if sidecar(&s["name"]) && s["started"] == true {
            progress.ready += usize::from(s["ready"] == true);
            continue;
        }
        progress.reason = Some(if terminated.is_object() {
            match terminated["reason"].as_str() {
                Some(reason) if !reason.is_empty() => format!("Init:{reason}"),
                _ => format!("Init:ExitCode:{}", terminated["exitCode"]),
            }
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{total}")
        });
        break;
    }
    progress
}

/// Up to three entries and how many more, as kubectl prints endpoints.
fn list_or_none(items: &[String]) -> String {
    match items.len() {
        0 => "<none>".into(),
        1..=3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = text(&o["metadata"]["name"]).to_owned();
    let created = age(text(&o["metadata"]["creationTimestamp"]));
    let status = &o["status"];
    let n = |k: &str| status[k].as_u64().unwrap_or(0);
    match kind {
        "Pod" => {
            let init = init_progress(o);
            let containers = o["spec"]["containers"].as_array().map_or(0, Vec::len) + init.sidecars;
            let statuses = status["containerStatuses"].as_array();
            let ready = init.ready
                + statuses.map_or(0, |c| c.iter().filter(|s| s["ready"] == true).count());
            let restarts: u64 = init.restarts
                + statuses.map_or(0, |c| {
                    c.iter().filter_map(|s| s["restartCount"].as_u64()).sum()
                });
            let waiting = statuses.and_then(|c| {
                c.iter()
                    .find_map(|s| s["state"]["waiting"]["reason"].as_str())
            });
            let terminated = statuses.and_then(|c| {
                c.iter()
                    .find_map(|s| s["state"]["terminated"]["reason"].as_str())
            });
            let phase = if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating".to_owned()
            } else if let Some(reason) = init.reason {
                reason
            } else {
                status["reason"]
                    .as_str()
                    .or(waiting)
                    .or(terminated)
                    .or(status["phase"].as_str())
                    .unwrap_or("Pending")
                    .to_owned()
            };
            let ip = status["podIP"].as_str().unwrap_or("<none>");
            let node = o["spec"]["nodeName"].as_str().unwrap_or("<none>");
            vec![
                name.into(),
                format!("{ready}/{containers}").into(),
                phase.into(),
                restarts.to_string().into(),
                created.into(),
                ip.into(),
                node.into(),
                "<none>".into(),
                "<none>".into(),
            ]
        }
        "Deployment" => {
            let want = o["spec"]["replicas"].as_u64().unwrap_or(1);
            let template = &o["spec"]["template"]["spec"];
            vec![
                name.into(),
                format!("{}/{want}", n("readyReplicas")).into(),
                n("updatedReplicas").into(),
                n("availableReplicas").into(),
                created.into(),
                container_list(template, "name").into(),
                container_list(template, "image").into(),
                selector_text(&o["spec"]["selector"]).into(),
            ]
        }
        "HorizontalPodAutoscaler" => {
            let spec = &o["spec"];
            let target = &spec["scaleTargetRef"];
            let min = spec["minReplicas"]
                .as_u64()
                .map_or_else(|| "<unset>".to_owned(), |n| n.to_string());
            vec![
                name.into(),
                format!("{}/{}", text(&target["kind"]), text(&target["name"])).into(),
                hpa_targets(&spec["metrics"], &status["currentMetrics"]).into(),
                min.into(),
                spec["maxReplicas"].as_u64().unwrap_or(0).into(),
                n("currentReplicas").into(),
                created.into(),
            ]
        }
        "StatefulSet" => {
            let template = &o["spec"]["template"]["spec"];
            let want = o["spec"]["replicas"].as_u64().unwrap_or(1);
            vec![
                name.into(),
                format!("{}/{want}", n("readyReplicas")).into(),
                created.into(),
                container_list(template, "name").into(),
                container_list(template, "image").into(),
            ]
        }
        "Job" => {
            let spec = &o["spec"];
            let succeeded = n("succeeded");
            let completions = match (spec["completions"].as_u64(), spec["parallelism"].as_u64()) {
                (Some(c), _) => format!("{succeeded}/{c}"),
                (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            };
            let time = |k: &str| humantime::parse_rfc3339(text(&status[k])).ok();
            let duration = match (time("startTime"), time("completionTime")) {
                (None, _) => String::new(),
                (Some(start), None) => human_duration(start.elapsed().unwrap_or_default()),
                (Some(start), Some(end)) => {
                    human_duration(end.duration_since(start).unwrap_or_default())
                }
            };
            let holds = |type_: &str| {
                status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == type_ && c["status"] == "True")
            };
            let state = if holds("Complete") {
                "Complete"
            } else if holds("Failed") {
                "Failed"
            } else if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else if holds("Suspended") {
                "Suspended"
            } else if holds("FailureTarget") {
                "FailureTarget"
            } else if holds("SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else {
                "Running"
            };
            let template = &spec["template"]["spec"];
            vec![
                name.into(),
                state.into(),
                completions.into(),
                duration.into(),
                created.into(),
                container_list(template, "name").into(),
                container_list(template, "image").into(),
                selector_text(&spec["selector"]).into(),
            ]
        }
        "CronJob" => {
            let spec = &o["spec"];
            let job = &spec["jobTemplate"]["spec"];
            let template = &job["template"]["spec"];
            let last = match status["lastScheduleTime"].as_str() {
                Some(t) => age(t),
                None => "<none>".into(),
            };
            let suspend = match spec["suspend"].as_bool() {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            };
            vec![
                name.into(),
                text(&spec["schedule"]).into(),
                spec["timeZone"].as_str().unwrap_or("<none>").into(),
                suspend.into(),
                status["active"].as_array().map_or(0, Vec::len).into(),
                last.into(),
                created.into(),
                container_list(template, "name").into(),
                container_list(template, "image").into(),
                selector_text(&job["selector"]).into(),
            ]
        }
        "Ingress" => {
            let spec = &o["spec"];
            let hosts: Vec<&str> = spec["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["host"].as_str())
                .collect();
            let hosts = match hosts.len() {
                0 => "*".to_owned(),
                1..=4 => hosts.join(","),
                n => format!("{} + {} more...", hosts[..4].join(","), n - 4),
            };
            let address: Vec<&str> = status["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .collect();
            let ports = if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                "80, 443"
            } else {
                "80"
            };
            vec![
                name.into(),
                spec["ingressClassName"].as_str().unwrap_or("<none>").into(),
                hosts.into(),
                address.join(",").into(),
                ports.into(),
                created.into(),
            ]
        }
        "IngressClass" => vec![
            name.into(),
            text(&o["spec"]["controller"]).into(),
            "<none>".into(),
            created.into(),
        ],
        "PersistentVolumeClaim" => {
            let spec = &o["spec"];
            vec![
                name.into(),
                status["phase"].as_str().unwrap_or("Pending").into(),
                text(&spec["volumeName"]).into(),
                text(&status["capacity"]["storage"]).into(),
                access_modes(&status["accessModes"]).into(),
                text(&spec["storageClassName"]).into(),
                "<unset>".into(),
                created.into(),
                text(&spec["volumeMode"]).into(),
            ]
        }
        "PersistentVolume" => {
            let spec = &o["spec"];
            let claim = &spec["claimRef"];
            let claim = if claim.is_object() {
                format!("{}/{}", text(&claim["namespace"]), text(&claim["name"]))
            } else {
                String::new()
            };
            vec![
                name.into(),
                text(&spec["capacity"]["storage"]).into(),
                access_modes(&spec["accessModes"]).into(),
                text(&spec["persistentVolumeReclaimPolicy"]).into(),
                status["phase"].as_str().unwrap_or("Pending").into(),
                claim.into(),
                text(&spec["storageClassName"]).into(),
                "<unset>".into(),
                text(&status["reason"]).into(),
                created.into(),
                text(&spec["volumeMode"]).into(),
            ]
        }
        "StorageClass" => {
            let default = o["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true";
            vec![
                if default {
                    format!("{name} (default)")
                } else {
                    name.clone()
                }
                .into(),
                text(&o["provisioner"]).into(),
                o["reclaimPolicy"].as_str().unwrap_or("Delete").into(),
                o["volumeBindingMode"]
                    .as_str()
                    .unwrap_or("Immediate")
                    .into(),
                o["allowVolumeExpansion"]
                    .as_bool()
                    .unwrap_or(false)
                    .to_string()
                    .into(),
                created.into(),
            ]
        }
        "ReplicaSet" => {
            let template = &o["spec"]["template"]["spec"];
            vec![
                name.into(),
                o["spec"]["replicas"].as_u64().unwrap_or(1).into(),
                n("replicas").into(),
                n("readyReplicas").into(),
                created.into(),
                container_list(template, "name").into(),
                container_list(template, "image").into(),
                selector_text(&o["spec"]["selector"]).into(),
            ]
        }
        "Service" => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_u64() {
                        Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                        None => format!("{}/{protocol}", p["port"]),
                    }
                })
                .collect();
            let selector: Vec<String> = o["spec"]["selector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect();
            vec![
                name.into(),
                o["spec"]["type"].as_str().unwrap_or("ClusterIP").into(),
                o["spec"]["clusterIP"].as_str().unwrap_or("<none>").into(),
                "<none>".into(),
                if ports.is_empty() {
                    "<none>".to_owned()
                } else {
                    ports.join(",")
                }
                .into(),
                created.into(),
                if selector.is_empty() {
                    "<none>".to_owned()
                } else {
                    selector.join(",")
                }
                .into(),
            ]
        }
        "ConfigMap" => vec![
            name.into(),
            (count(&o["data"]) + count(&o["binaryData"])).into(),
            created.into(),
        ],
        "NetworkPolicy" => vec![
            name.into(),
            selector_text(&o["spec"]["podSelector"]).into(),
            created.into(),
        ],
        "Secret" => vec![
            name.into(),
            o["type"].as_str().unwrap_or("Opaque").into(),
            count(&o["data"]).into(),
            created.into(),
        ],
        "Namespace" => vec![
            name.into(),
            status["phase"].as_str().unwrap_or("Active").into(),
            created.into(),
        ],
        "Node" => {
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            vec![
                name.into(),
                if ready { "Ready" } else { "NotReady" }.into(),
                "<none>".into(),
                created.into(),
                text(&status["nodeInfo"]["kubeletVersion"]).into(),
            ]
        }
        "Event" => {
            let last = o["lastTimestamp"]
                .as_str()
                .or(o["eventTime"].as_str())
                .unwrap_or("");
            let object = format!(
                "{}/{}",
                text(&o["involvedObject"]["kind"]).to_ascii_lowercase(),
                text(&o["involvedObject"]["name"])
            );
            vec![
                age(last).into(),
                text(&o["type"]).into(),
                text(&o["reason"]).into(),
                object.into(),
                text(&o["message"]).into(),
            ]
        }
        "ServiceAccount" => vec![name.into(), 0.into(), created.into()],
        "RuntimeClass" => vec![name.into(), text(&o["handler"]).into(), created.into()],
        "Endpoints" => {
            let mut shown: Vec<String> = Vec::new();
            for subset in o["subsets"].as_array().into_iter().flatten() {
                for address in subset["addresses"].as_array().into_iter().flatten() {
                    for port in subset["ports"].as_array().into_iter().flatten() {
                        shown.push(format!("{}:{}", text(&address["ip"]), port["port"]));
                    }
                }
            }
            vec![name.into(), list_or_none(&shown).into(), created.into()]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].to_string())
                .collect();
            let addresses: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .map(|a| text(&a).to_owned())
                .collect();
            vec![
                name.into(),
                text(&o["addressType"]).into(),
                list_or_none(&ports).into(),
                list_or_none(&addresses).into(),
                created.into(),
            ]
        }
        _ => vec![name.into(), created.into()],
    }
}

/// The Table of `objects` (whole Kubernetes objects of `kind`), each row
/// carrying its object's metadata as kubectl expects (`includeObject`
/// Metadata by default, the whole object with `Object`, none with `None`).
pub fn table(
    kind: &str,
    objects: &[Value],
    include: Include,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let definitions: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(name, kind, priority, description)| {
            let format = match name {
                "Name" => "name",
                "Age" => "",
                _ => "",
            };
            json!({
                "name": name, "type": kind, "format": format,
                "description": description, "priority": priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| row(kind, o, include)).collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = token.into();
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// One object as a Table of one row without column definitions, as a
/// watch sends each change.
pub fn watch_row(kind: &str, object: &Value, include: Include) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": object["metadata"]["resourceVersion"]},
        "columnDefinitions": [],
        "rows": [row(kind, object, include)],
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(value: Option<&str>) -> Include {
        match value {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn row(kind: &str, object: &Value, include: Include) -> Value {
    let embedded = match include {
        Include::None => Value::Null,
        Include::Object => object.clone(),
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        }),
    };
    let mut row = json!({"cells": cells(kind, object)});
    if !embedded.is_null() {
        row["object"] = embedded;
    }
    row
}

/// An HPA's TARGETS as kubectl shows them: `cpu: 45%/50%`,
/// `memory: 10Mi/20Mi`, `3/5` for a Pods metric, `<unknown>` before a
/// value is known; two at most, then `+ N more...`.
fn hpa_targets(metrics: &Value, current: &Value) -> String {
    let Some(metrics) = metrics.as_array().filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let unknown = || "<unknown>".to_owned();
    let shown: Vec<String> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let now = &current[i];
            match m["type"].as_str() {
                Some("Resource") => {
                    let r = &m["resource"];
                    let name = text(&r["name"]);
                    if let Some(value) = r["target"]["averageValue"].as_str() {
                        let got = now["resource"]["current"]["averageValue"]
                            .as_str()
                            .map_or_else(unknown, str::to_owned);
                        format!("{name}: {got}/{value}")
                    } else {
                        let got = now["resource"]["current"]["averageUtilization"]
                            .as_i64()
                            .map_or_else(unknown, |n| format!("{n}%"));
                        let want = r["target"]["averageUtilization"]
                            .as_i64()
                            .map_or_else(|| "<auto>".to_owned(), |n| format!("{n}%"));
                        format!("{name}: {got}/{want}")
                    }
                }
                Some("Pods") => {
                    let got = now["pods"]["current"]["averageValue"]
                        .as_str()
                        .map_or_else(unknown, str::to_owned);
                    format!("{got}/{}", text(&m["pods"]["target"]["averageValue"]))
                }
                Some("Object") => {
                    let target = &m["object"]["target"];
                    let current = &now["object"]["current"];
                    match target["averageValue"].as_str() {
                        Some(value) => format!(
                            "{}/{value} (avg)",
                            current["averageValue"]
                                .as_str()
                                .map_or_else(unknown, str::to_owned)
                        ),
                        None => format!(
                            "{}/{}",
                            current["value"]
                                .as_str()
                                .map_or_else(unknown, str::to_owned),
                            text(&target["value"])
                        ),
                    }
                }
                _ => "<unknown type>".to_owned(),
            }
        })
        .collect();
    if shown.len() > 2 {
        format!("{} + {} more...", shown[..2].join(", "), shown.len() - 2)
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_row_shows_its_init_containers_as_kubectl_does() {
        let row = |init: Value, statuses: Value| {
            let pod = json!({
                "metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
                "spec": {"initContainers": init, "containers": [{"name": "app"}]},
                "status": {"phase": "Pending", "initContainerStatuses": statuses,
                           "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                             "state": {"waiting": {"reason": "PodInitializing"}}}]},
            });
            let t = table("Pod", &[pod], Include::Metadata, "7", None);
            let cells = t["rows"][0]["cells"].as_array().unwrap().clone();
            (cells[1].clone(), cells[2].clone(), cells[3].clone())
        };
        let two = json!([{"name": "a"}, {"name": "b"}]);
        let done = json!({"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        assert_eq!(
            row(
                two.clone(),
                json!([done, {"name": "b", "restartCount": 0, "state": {"running": {}}}])
            ),
            (json!("0/1"), json!("Init:1/2"), json!("0"))
        );
        assert_eq!(
            row(
                two.clone(),
                json!([done, {"name": "b", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
            ),
            (json!("0/1"), json!("Init:CrashLoopBackOff"), json!("3"))
        );
        assert_eq!(
            row(
                two,
                json!([{"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}])
            ),
            (json!("0/1"), json!("Init:Error"), json!("0"))
        );
        // A started sidecar counts among the pod's containers (and the
        // app's wait shows, as kubectl shows it).
        assert_eq!(
            row(
                json!([{"name": "proxy", "restartPolicy": "Always"}]),
                json!([{"name": "proxy", "restartCount": 1, "started": true, "ready": true, "state": {"running": {}}}])
            ),
            (json!("1/2"), json!("PodInitializing"), json!("1"))
        );
    }

    #[test]
    fn a_pod_row_has_one_cell_per_column() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2},
                {"name": "b", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            ]},
        });
        let t = table("Pod", &[pod], Include::Metadata, "7", None);
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(
            cells.len(),
            t["columnDefinitions"].as_array().unwrap().len()
        );
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web-1");
    }

    #[test]
    fn hpa_targets_read_as_kubectl_shows_them() {
        let metrics = json!([
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Pods", "pods": {"metric": {"name": "m"}, "target": {"type": "AverageValue", "averageValue": "5"}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "20Mi"}}},
        ]);
        assert_eq!(
            super::hpa_targets(&metrics, &Value::Null),
            "cpu: <unknown>/50%, <unknown>/5 + 1 more..."
        );
        let current = json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45}}}]);
        assert_eq!(
            super::hpa_targets(&json!([metrics[0]]), &current),
            "cpu: 45%/50%"
        );
        assert_eq!(super::hpa_targets(&json!([]), &Value::Null), "<none>");
    }

    #[test]
    fn every_kind_has_as_many_cells_as_columns() {
        for kind in [
            "Pod",
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "HorizontalPodAutoscaler",
            "Job",
            "CronJob",
            "Ingress",
            "IngressClass",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "StorageClass",
            "Service",
            "ConfigMap",
            "NetworkPolicy",
            "Secret",
            "Namespace",
            "Node",
            "Event",
            "ServiceAccount",
            "RuntimeClass",
            "Endpoints",
            "EndpointSlice",
        ] {
            assert_eq!(cells(kind, &json!({})).len(), columns(kind).len(), "{kind}");
        }
    }
}
