use super::*;
use crate::Quantity;
use crate::objects::{IntOrString, RestartPolicy, StrategyType};

const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, tier: front}
      annotations:
        berth.dev/allow-outbound: "api.example.com, stock:8080"
    spec:
      containers:
      - name: web
        image: registry.example/web:1
        env:
        - {name: MODE, value: prod}
        - name: GREETING
          valueFrom:
            configMapKeyRef: {name: settings, key: greeting}
        resources:
          requests: {cpu: 100m, memory: 32Mi}
          limits: {cpu: 1, memory: 64Mi}
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
        volumeMounts:
        - {name: static, mountPath: /static, readOnly: true}
      volumes:
      - name: static
        image: {reference: registry.example/static:1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080}
"#;

#[test]
fn a_multi_document_manifest_loads_with_kubernetes_defaults() {
    let loaded = parse_str(GOOD, "shop.yaml").unwrap();
    let kinds: Vec<Kind> = loaded.iter().map(|l| l.object.kind()).collect();
    assert_eq!(
        kinds,
        [
            Kind::Namespace,
            Kind::ConfigMap,
            Kind::Deployment,
            Kind::Service
        ]
    );
    assert_eq!(loaded[2].source, "shop.yaml (document 3)");
    let Object::Deployment(d) = &loaded[2].object else {
        panic!("not a deployment")
    };
    assert_eq!(d.spec.replicas, 3);
    assert_eq!(d.spec.revision_history_limit, 10);
    assert_eq!(d.spec.progress_deadline_seconds, 600);
    assert_eq!(d.spec.strategy.kind, StrategyType::RollingUpdate);
    assert_eq!(d.spec.template.spec.restart_policy, RestartPolicy::Always);
    assert_eq!(d.spec.template.spec.termination_grace_period_seconds, 30);
    let container = &d.spec.template.spec.containers[0];
    assert_eq!(
        container.resources.limits.cpu,
        Some(Quantity::from_units(1))
    );
    assert_eq!(
        container.resources.requests.memory,
        Some("32Mi".parse().unwrap())
    );
    let probe = container.readiness_probe.as_ref().unwrap();
    assert_eq!(
        (
            probe.period_seconds,
            probe.timeout_seconds,
            probe.failure_threshold,
            probe.success_threshold
        ),
        (10, 1, 3, 1)
    );
    assert_eq!(
        probe.http_get.as_ref().unwrap().port,
        IntOrString::Int(8080)
    );
    assert_eq!(loaded[0].object.namespace(), None);
    assert_eq!(loaded[3].object.namespace(), Some("shop"));
}

#[test]
fn surge_and_unavailability_round_as_kubernetes_does() {
    let deployment = |replicas: u32, strategy: &str| {
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{a: b}}}}\n{strategy}  template:\n    metadata: {{labels: {{a: b}}}}\n    spec:\n      containers: [{{name: c, image: i}}]\n"
        );
        match parse_str(&text, "d.yaml").unwrap().remove(0).object {
            Object::Deployment(d) => d.spec.surge_and_unavailable(),
            _ => unreachable!(),
        }
    };
    assert_eq!(
        deployment(3, ""),
        (1, 0),
        "25% of 3: surge up to 1, unavailable down to 0"
    );
    assert_eq!(deployment(10, ""), (3, 2));
    assert_eq!(deployment(1, ""), (1, 0));
    let zero = "  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 0}\n";
    assert_eq!(
        deployment(4, zero),
        (0, 1),
        "both zero means one may be unavailable"
    );
    let explicit = "  strategy:\n    rollingUpdate: {maxSurge: 50%, maxUnavailable: 2}\n";
    assert_eq!(deployment(5, explicit), (3, 2));
}

/// The error for `text`, which must not load.
fn error(text: &str) -> String {
    parse_str(text, "bad.yaml")
        .expect_err("the manifest should be refused")
        .to_string()
}

const POD_HEAD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n";

#[test]
fn unknown_fields_are_named_with_their_path() {
    let e = error(&format!(
        "{POD_HEAD}  - name: c\n    image: i\n    imagePulPolicy: Always\n"
    ));
    assert!(
        e.starts_with("bad.yaml: Pod p: spec.containers[0].imagePulPolicy: unknown field `imagePulPolicy`, expected one of"),
        "{e}"
    );
    let e =
        error("apiVersion: v1\nkind: Pod\nmetadata: {name: p, uid: x}\nspec: {containers: []}\n");
    assert!(
        e.contains("Pod p: metadata.uid: unknown field `uid`"),
        "{e}"
    );
    let e = error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\nstatus: {}\n",
    );
    assert!(e.contains("unknown field `status`"), "{e}");
}

#[test]
fn bad_values_are_named_with_their_path() {
    let e = error(&format!(
        "{POD_HEAD}  - name: c\n    image: i\n    resources: {{limits: {{memory: 12Zi}}}}\n"
    ));
    assert!(
        e.contains("spec.containers[0].resources.limits.memory: "),
        "{e}"
    );
    assert!(e.contains("12Zi"), "{e}");
    let e = error(&format!("{POD_HEAD}  - name: c\n"));
    assert_eq!(
        e,
        "bad.yaml: Pod p: spec.containers[0].image: an image is required"
    );
    let e = error(&format!(
        "{POD_HEAD}  - name: c\n    image: i\n    resources: {{requests: {{cpu: 2}}, limits: {{cpu: 1}}}}\n"
    ));
    assert!(
        e.contains("resources.requests.cpu: the request 2 is more than the limit 1"),
        "{e}"
    );
    let e = error(&format!(
        "{POD_HEAD}  - name: c\n    image: i\n    volumeMounts: [{{name: v, mountPath: /v}}]\n"
    ));
    assert!(e.contains("volumeMounts[0].name: no volume named v"), "{e}");
    let e = error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c, image: i}]}\n",
    );
    assert!(e.contains("metadata.name: \"Bad_Name\""), "{e}");
    let e = error(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {berth.dev/allow-outbound: \"a:b:c\"}\nspec: {containers: [{name: c, image: i}]}\n",
    );
    assert!(
        e.contains("metadata.annotations.berth.dev/allow-outbound"),
        "{e}"
    );
    for bad in ["0", "-1", "lots", "1000001", "3000000000000000000"] {
        let e = error(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {{berth.dev/max-concurrency: \"{bad}\"}}\nspec: {{containers: [{{name: c, image: i}}]}}\n",
        ));
        assert!(
            e.contains(&format!(
                "metadata.annotations.berth.dev/max-concurrency: \"{bad}\" is not a whole number from 1 to 1000000"
            )),
            "{e}"
        );
    }
}

#[test]
fn a_selector_that_misses_its_template_is_refused() {
    let e = error(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c, image: i}]}\n",
    );
    assert!(
        e.starts_with(
            "bad.yaml: Deployment d: spec.selector: does not match spec.template.metadata.labels"
        ),
        "{e}"
    );
}

#[test]
fn unknown_kinds_and_broken_documents_are_refused() {
    let e = error("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: j}\n");
    assert!(
        e.contains("policy/v1 PodDisruptionBudget is not a kind berth supports"),
        "{e}"
    );
    assert!(error("kind: Pod\n").contains("apiVersion is missing"));
    assert!(error("- a\n- b\n").contains("must be a mapping"));
    assert!(error("a: [unclosed\n").contains("not valid YAML"));
    // One bad document refuses the whole file.
    let e = error(&format!(
        "{GOOD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{}}\n"
    ));
    assert!(
        e.starts_with("bad.yaml (document 5): Pod p: spec: missing field `containers`"),
        "{e}"
    );
}

#[test]
fn directories_load_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.yml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let loaded = load_paths(&[dir.path().to_owned()]).unwrap();
    let names: Vec<&str> = loaded
        .iter()
        .map(|l| l.object.metadata().name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn a_secrets_string_data_is_merged_into_its_data_and_not_kept() {
    let loaded = parse_str(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: YQ==, b: Yg==}\nstringData: {b: two, c: three}\n",
        "s.yaml",
    )
    .unwrap();
    let Object::Secret(secret) = &loaded[0].object else {
        panic!("not a secret")
    };
    assert!(secret.string_data.is_empty());
    let data: Vec<(&str, Vec<u8>)> = secret
        .data
        .iter()
        .map(|(k, v)| (k.as_str(), base64_decode(v).unwrap()))
        .collect();
    assert_eq!(
        data,
        [
            ("a", b"a".to_vec()),
            ("b", b"two".to_vec()),
            ("c", b"three".to_vec())
        ]
    );
}

#[test]
fn host_users_false_cannot_go_with_host_network() {
    let error = parse_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  hostUsers: false\n  containers: [{name: c, image: busybox:1}]\n",
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("spec.hostUsers"), "{error}");
}

#[test]
fn deep_nesting_is_refused_before_the_parser_sees_it() {
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {{a: {}{}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    // Refused by the scan, not by the parser's recursion limit (which it
    // reaches only after seconds of work).
    let error = parse_str(&deep, "deep.yaml").unwrap_err().to_string();
    assert!(error.contains("nested deeper than 100 levels"), "{error}");
    assert!(error.contains("line 4"), "{error}");

    // Brackets in quotes and comments are text, and JSON in a block scalar
    // nests as deep as it likes within reason.
    let fine = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: fine}} # {}\ndata:\n  q: \"{}\"\n  s: '{}'\n  j: |\n    {}{}\n",
        "[".repeat(500),
        "[".repeat(500),
        "{".repeat(500),
        "[".repeat(50),
        "]".repeat(50)
    );
    parse_str(&fine, "fine.yaml").unwrap();

    // A quote in the middle of a plain scalar, or in a block scalar, is
    // text: it hides nothing after it.
    for opener in ["note: b '\n", "note: |\n  'x\n"] {
        let sneaky = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\n{opener}data: {{a: {}{}}}\n",
            "[".repeat(1000),
            "]".repeat(1000)
        );
        let error = parse_str(&sneaky, "sneaky.yaml").unwrap_err().to_string();
        assert!(
            error.contains("nested deeper than 100 levels"),
            "{opener:?}: {error}"
        );
    }
}

#[test]
fn kubernetes_defaults_are_set_outside_pod_templates() {
    let loaded = parse_str(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: web:1, ports: [{containerPort: 8080}]}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: once}\nspec:\n  strategy: {type: Recreate}\n  selector: {matchLabels: {app: once}}\n  template:\n    metadata: {labels: {app: once}}\n    spec:\n      containers: [{name: web, image: web:1}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
        "d.yaml",
    )
    .unwrap();
    let values: Vec<serde_json::Value> = loaded.iter().map(|l| l.object.to_value()).collect();
    let rolling = &values[0]["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(rolling["maxSurge"], "25%");
    assert_eq!(rolling["maxUnavailable"], "25%");
    // Nothing added inside the template: its hash names the replica set.
    assert!(
        values[0]["spec"]["template"]["spec"]["containers"][0]["ports"][0]
            .get("protocol")
            .is_none()
    );
    assert!(values[1]["spec"]["strategy"].get("rollingUpdate").is_none());
    assert_eq!(values[2]["spec"]["ports"][0]["protocol"], "TCP");
}

#[test]
fn env_from_pod_fields_takes_the_downward_api_paths() {
    let env = |path: &str| {
        format!(
            "{POD_HEAD}  - name: c\n    image: i\n    env:\n    - name: X\n      valueFrom:\n        fieldRef: {{fieldPath: \"{path}\"}}\n"
        )
    };
    for good in [
        "metadata.name",
        "metadata.labels['app.kubernetes.io/name']",
        "metadata.annotations['batch.kubernetes.io/job-completion-index']",
        "status.podIP",
    ] {
        parse_str(&env(good), "good.yaml").expect(good);
    }
    let e = error(&env("metadata.labels"));
    assert!(
        e.contains("spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: \"metadata.labels\" is not a supported field"),
        "{e}"
    );
    let e = error(&format!(
        "{POD_HEAD}  - name: c\n    image: i\n    env:\n    - name: X\n      valueFrom:\n        fieldRef: {{fieldPath: metadata.name}}\n        secretKeyRef: {{name: s, key: k}}\n"
    ));
    assert!(
        e.contains("exactly one of configMapKeyRef, secretKeyRef or fieldRef"),
        "{e}"
    );
}

#[test]
fn a_job_is_stored_with_kubernetes_defaults_and_checked() {
    let head = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n";
    let pod = "  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: i}]\n";
    let loaded = parse_str(&format!("{head}{pod}"), "job.yaml").unwrap();
    let Object::Job(job) = &loaded[0].object else {
        panic!("not a job")
    };
    assert_eq!(job.spec.completions, Some(1));
    assert_eq!(job.spec.parallelism, Some(1));
    assert_eq!(job.spec.backoff_limit, Some(6));
    assert_eq!(job.spec.suspend, Some(false));
    // Parallelism alone is a work queue: no completions.
    let loaded = parse_str(&format!("{head}  parallelism: 3\n{pod}"), "job.yaml").unwrap();
    let Object::Job(job) = &loaded[0].object else {
        panic!("not a job")
    };
    assert_eq!(job.spec.completions, None);

    let e = error(&format!("{head}  completions: -1\n{pod}"));
    assert!(e.contains("Job j: spec.completions: invalid value"), "{e}");
    let e = error(&format!(
        "{head}  template:\n    spec:\n      containers: [{{name: c, image: i}}]\n"
    ));
    assert!(
        e.contains("spec.template.spec.restartPolicy: a job's pods run to completion"),
        "{e}"
    );
    let e = error(&format!(
        "{head}  completionMode: Indexed\n  parallelism: 2\n{pod}"
    ));
    assert!(
        e.contains("spec.completions: an Indexed job needs completions"),
        "{e}"
    );
    let e = error(&format!("{head}  completions: 1000000\n{pod}"));
    assert!(
        e.contains("spec.completions: must be no more than 100000"),
        "{e}"
    );
}

#[test]
fn a_job_s_template_and_completions_do_not_change_and_its_selector_stays() {
    let job = |extra: &str, image: &str| {
        let text = format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: j}}\nspec:\n{extra}  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: {image}}}]\n"
        );
        parse_str(&text, "job.yaml").unwrap().remove(0).object
    };
    let mut stored = job("", "i:1");
    let Object::Job(j) = &mut stored else {
        unreachable!()
    };
    j.spec.selector = Some(crate::objects::LabelSelector {
        match_labels: [(
            "batch.kubernetes.io/controller-uid".to_owned(),
            "u".to_owned(),
        )]
        .into(),
        ..Default::default()
    });
    j.spec
        .template
        .metadata
        .labels
        .insert("batch.kubernetes.io/controller-uid".into(), "u".into());
    // Written back as first written: the selector and labels stay.
    let mut same = job("  backoffLimit: 3\n", "i:1");
    check_update(&stored, &mut same).unwrap();
    let Object::Job(kept) = &same else {
        unreachable!()
    };
    assert!(kept.spec.selector.is_some());
    let mut other_image = job("", "i:2");
    assert_eq!(
        check_update(&stored, &mut other_image).unwrap_err().0,
        "spec.template"
    );
    let mut more = job("  completions: 3\n", "i:1");
    assert_eq!(
        check_update(&stored, &mut more).unwrap_err().0,
        "spec.completions"
    );
}

#[test]
fn a_cron_job_s_schedule_zone_and_template_are_checked() {
    let cron = |schedule: &str, zone: &str| {
        format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: c}}\nspec:\n  schedule: \"{schedule}\"\n{zone}  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{{name: c, image: i}}]\n"
        )
    };
    let loaded = parse_str(&cron("*/5 * * * *", ""), "c.yaml").unwrap();
    let Object::CronJob(c) = &loaded[0].object else {
        panic!("not a cron job")
    };
    assert_eq!(c.spec.successful_jobs_history_limit, Some(3));
    assert_eq!(c.spec.job_template.spec.backoff_limit, Some(6));
    let e = error(&cron("every minute", ""));
    assert!(
        e.contains("CronJob c: spec.schedule: \"every minute\" is not a valid cron schedule"),
        "{e}"
    );
    let e = error(&cron("* * * * *", "  timeZone: Nowhere/Town\n"));
    assert!(
        e.contains("spec.timeZone: \"Nowhere/Town\" is not a time zone"),
        "{e}"
    );
    let e = error(&cron("* * * * *", "").replace("OnFailure", "Always"));
    assert!(
        e.contains("spec.jobTemplate.spec.template.spec.restartPolicy"),
        "{e}"
    );
}

#[test]
fn two_containers_of_a_pod_declaring_one_port_are_refused_naming_both() {
    let e = error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  \
         - {name: a, image: a:1, ports: [{containerPort: 8080}]}\n  \
         - {name: b, image: b:1, ports: [{containerPort: 9000}, {containerPort: 8080}]}\n",
    );
    assert!(
        e.contains(
            "spec.containers[1].ports[1].containerPort: 8080/TCP is declared by containers a and b"
        ),
        "{e}"
    );
}

#[test]
fn init_containers_are_checked_as_containers_and_named_with_the_app_s() {
    let pod = |init: &str, app: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  initContainers:\n  \
             - {init}\n  containers:\n  - {app}\n"
        )
    };
    let e = error(&pod(
        "{name: setup, image: a:1, readinessProbe: {tcpSocket: {port: 80}}}",
        "{name: app, image: b:1}",
    ));
    assert!(
        e.contains("spec.initContainers[0].readinessProbe: may not be set for init containers"),
        "{e}"
    );
    let e = error(&pod("{name: app, image: a:1}", "{name: app, image: b:1}"));
    assert!(
        e.contains("spec.containers[0].name: app is used twice"),
        "{e}"
    );
    let e = error(&pod("{name: setup, image: ''}", "{name: app, image: b:1}"));
    assert!(
        e.contains("spec.initContainers[0].image: an image is required"),
        "{e}"
    );
    let e = error(&pod(
        "{name: setup, image: a:1}",
        "{name: app, image: b:1, restartPolicy: Always}",
    ));
    assert!(
        e.contains("spec.containers[0].restartPolicy: may not be set for non-init containers"),
        "{e}"
    );
    let e = error(&pod(
        "{name: proxy, image: a:1, restartPolicy: Always, ports: [{containerPort: 8080}]}",
        "{name: app, image: b:1, ports: [{containerPort: 8080}]}",
    ));
    assert!(
        e.contains("spec.containers[0].ports[0].containerPort: 8080/TCP is declared by containers proxy and app"),
        "{e}"
    );
    let e = error(&pod(
        "{name: setup, image: a:1, restartPolicy: OnFailure}",
        "{name: app, image: b:1}",
    ));
    assert!(e.contains("restartPolicy"), "{e}");
    // A sidecar may be probed; an init container that runs alone may
    // declare a port an app container declares too.
    parse_str(&pod(
        "{name: proxy, image: a:1, restartPolicy: Always, readinessProbe: {tcpSocket: {port: 80}}}",
        "{name: app, image: b:1}",
    ), "ok.yaml")
    .unwrap();
    parse_str(
        &pod(
            "{name: setup, image: a:1, ports: [{containerPort: 8080}]}",
            "{name: app, image: b:1, ports: [{containerPort: 8080}]}",
        ),
        "ok.yaml",
    )
    .unwrap();
}

#[test]
fn an_empty_dir_is_on_disk_or_in_memory() {
    let pod = |medium: &str| {
        format!(
            "{POD_HEAD}  - {{name: a, image: a:1}}\n  volumes: [{{name: v, emptyDir: {{medium: {medium}}}}}]\n"
        )
    };
    let e = error(&pod("HugePages"));
    assert!(
        e.contains("spec.volumes[0].emptyDir.medium: \"HugePages\""),
        "{e}"
    );
    parse_str(&pod("Memory"), "ok.yaml").unwrap();
    parse_str(&pod("''"), "ok.yaml").unwrap();
}

#[test]
fn dns_policy_and_config_are_checked_as_kube_apiserver_does() {
    let pod = |dns: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{dns}  containers: [{{name: c, image: busybox:1}}]\n"
        )
    };
    let good = pod(
        "  dnsPolicy: None\n  dnsConfig:\n    nameservers: [192.0.2.53, '2001:db8::53']\n    searches: [corp.example, example.]\n    options: [{name: ndots, value: '2'}, {name: edns0}]\n",
    );
    let loaded = parse_str(&good, "p.yaml").unwrap();
    let crate::Object::Pod(p) = &loaded[0].object else {
        panic!("not a pod")
    };
    let config = p.spec.dns_config.as_ref().unwrap();
    assert_eq!(config.nameservers, ["192.0.2.53", "2001:db8::53"]);
    assert_eq!(config.options[0].value.as_deref(), Some("2"));
    for (dns, names) in [
        ("  dnsPolicy: Bogus\n", "spec.dnsPolicy"),
        ("  dnsPolicy: None\n", "spec.dnsConfig.nameservers"),
        (
            "  dnsConfig: {nameservers: [1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4]}\n",
            "spec.dnsConfig.nameservers",
        ),
        (
            "  dnsConfig: {nameservers: [dns.example]}\n",
            "spec.dnsConfig.nameservers[0]",
        ),
        (
            "  dnsConfig: {searches: [Not_A_Name]}\n",
            "spec.dnsConfig.searches[0]",
        ),
        (
            "  dnsConfig: {options: [{value: '1'}]}\n",
            "spec.dnsConfig.options[0].name",
        ),
    ] {
        let refused = error(&pod(dns));
        assert!(refused.contains(names), "{dns}: {refused}");
    }
}

#[test]
fn a_network_policy_loads_with_its_default_types_and_bad_ones_are_named() {
    use crate::objects::PolicyType;
    let head = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db}\n";
    let loaded = parse_str(
        &format!(
            "{head}spec:\n  podSelector: {{matchLabels: {{app: db}}}}\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{app: api}}}}\n      namespaceSelector: {{}}\n    - ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}\n    ports:\n    - {{port: 5432}}\n    - {{port: metrics}}\n    - {{port: 7000, endPort: 7010}}\n"
        ),
        "np.yaml",
    )
    .unwrap();
    let Object::NetworkPolicy(policy) = &loaded[0].object else {
        panic!("not a NetworkPolicy: {:?}", loaded[0].object);
    };
    assert!(policy.spec.isolates(PolicyType::Ingress));
    assert!(!policy.spec.isolates(PolicyType::Egress));
    // Egress rules alone make an Egress policy too, as kube-apiserver
    // defaults policyTypes.
    let egress = parse_str(
        &format!("{head}spec:\n  podSelector: {{}}\n  egress:\n  - {{}}\n"),
        "np.yaml",
    )
    .unwrap();
    let Object::NetworkPolicy(egress) = &egress[0].object else {
        panic!()
    };
    assert!(egress.spec.isolates(PolicyType::Egress));
    assert!(egress.spec.isolates(PolicyType::Ingress));
    // An empty policyTypes is an unset one, not "isolates nothing".
    let empty = parse_str(
        &format!("{head}spec:\n  podSelector: {{}}\n  policyTypes: []\n"),
        "np.yaml",
    )
    .unwrap();
    let Object::NetworkPolicy(empty) = &empty[0].object else {
        panic!()
    };
    assert!(empty.spec.isolates(PolicyType::Ingress));

    for (spec, path, says) in [
        (
            "ingress:\n  - from: [{}]\n",
            "spec.ingress[0].from[0]",
            "must give",
        ),
        (
            "ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n",
            "spec.ingress[0].from[0]",
            "may not be given",
        ),
        (
            "egress:\n  - to: [{ipBlock: {cidr: 10.0.0/8}}]\n",
            "spec.egress[0].to[0].ipBlock.cidr",
            "not an address range",
        ),
        (
            "egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]\n",
            "spec.egress[0].to[0].ipBlock.except[0]",
            "not strictly inside",
        ),
        (
            "egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]\n",
            "spec.egress[0].to[0].ipBlock.except[0]",
            "not strictly inside",
        ),
        (
            "ingress:\n  - ports: [{port: 0}]\n",
            "spec.ingress[0].ports[0].port",
            "neither",
        ),
        (
            "ingress:\n  - ports: [{port: Web_Port}]\n",
            "spec.ingress[0].ports[0].port",
            "neither",
        ),
        (
            "ingress:\n  - ports: [{port: http, endPort: 90}]\n",
            "spec.ingress[0].ports[0].endPort",
            "numbered port",
        ),
        (
            "ingress:\n  - ports: [{port: 90, endPort: 80}]\n",
            "spec.ingress[0].ports[0].endPort",
            "from the port",
        ),
        (
            "ingress:\n  - ports: [{protocol: ICMP}]\n",
            "spec.ingress[0].ports[0].protocol",
            "not TCP",
        ),
        (
            "podSelector: {matchExpressions: [{key: a, operator: In}]}\n",
            "spec.podSelector.matchExpressions[0].values",
            "needs values",
        ),
        (
            "policyTypes: [Ingress, Ingress]\n",
            "spec.policyTypes",
            "once each",
        ),
        ("policyTypes: [Sideways]\n", "spec.policyTypes", "Sideways"),
    ] {
        let e = error(&format!("{head}spec:\n  {spec}"));
        assert!(e.contains(path) && e.contains(says), "{spec}: {e}");
    }
}
