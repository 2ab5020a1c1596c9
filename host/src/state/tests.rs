use super::*;
use crate::spec::parse_str;

fn objects(text: &str) -> Vec<Object> {
    parse_str(text, "test.yaml")
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect()
}

fn deployment(replicas: u32, image: &str, labels: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, labels: {{{labels}}}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: web, image: {image}}}]\n"
    )
}

#[test]
fn apply_creates_configures_and_leaves_unchanged_as_kubectl_says() {
    let mut store = Store::in_memory().unwrap();
    let first = objects(&deployment(1, "web:1", ""));
    assert_eq!(store.apply(&first).unwrap(), [Outcome::Created]);
    let created = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(created.generation, 1);
    assert_eq!(created.uid.len(), 36);
    assert_eq!(created.object, first[0]);

    assert_eq!(store.apply(&first).unwrap(), [Outcome::Unchanged]);
    let same = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(same.resource_version, created.resource_version);

    // A label is metadata: a new resourceVersion, the same generation.
    let labelled = objects(&deployment(1, "web:1", "team: a"));
    assert_eq!(store.apply(&labelled).unwrap(), [Outcome::Configured]);
    let after_label = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(after_label.generation, 1);
    assert!(after_label.resource_version > created.resource_version);
    assert_eq!(after_label.uid, created.uid);

    // A spec change bumps the generation.
    store
        .apply(&objects(&deployment(3, "web:2", "team: a")))
        .unwrap();
    let changed = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(changed.generation, 2);

    // Status is separate from the spec: no generation change.
    store
        .set_status(
            Kind::Deployment,
            "default",
            "web",
            &Status::from_value(Kind::Deployment, serde_json::json!({"readyReplicas": 3})).unwrap(),
        )
        .unwrap();
    let with_status = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(with_status.generation, 2);
    assert_eq!(with_status.status.to_value()["readyReplicas"], 3);

    assert!(store.delete(Kind::Deployment, "default", "web").unwrap());
    assert!(
        store
            .get(Kind::Deployment, "default", "web")
            .unwrap()
            .is_none()
    );
    assert!(!store.delete(Kind::Deployment, "default", "web").unwrap());
}

#[test]
fn an_apply_with_one_refused_object_changes_nothing() {
    let mut store = Store::in_memory().unwrap();
    let text = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: missing}}\ndata: {{}}\n",
        deployment(1, "web:1", "")
    );
    let err = store.apply(&objects(&text)).unwrap_err();
    assert!(
        err.to_string().contains("namespace missing does not exist"),
        "{err}"
    );
    assert!(
        store
            .get(Kind::Deployment, "default", "web")
            .unwrap()
            .is_none()
    );

    // The namespace in the same apply is enough.
    let text = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: missing}}\n---\n{text}");
    let outcomes = store.apply(&objects(&text)).unwrap();
    assert_eq!(outcomes, [Outcome::Created; 3]);
    assert_eq!(
        store.list(Kind::ConfigMap, Some("missing")).unwrap().len(),
        1
    );
    assert_eq!(store.list(Kind::ConfigMap, None).unwrap().len(), 1);
    assert_eq!(
        store.list(Kind::ConfigMap, Some("default")).unwrap().len(),
        0
    );

    // Deleting the namespace deletes what it holds; `default` stays.
    assert!(store.delete(Kind::Namespace, "", "missing").unwrap());
    assert_eq!(store.list(Kind::ConfigMap, None).unwrap().len(), 0);
    assert!(
        store
            .get(Kind::Deployment, "default", "web")
            .unwrap()
            .is_some()
    );
    assert!(store.delete(Kind::Namespace, "", "default").is_err());
}

#[test]
fn committed_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut store = Store::open(&path).unwrap();
        store.apply(&objects(&deployment(2, "web:1", ""))).unwrap();
        let template = serde_json::json!({"image": "web:1"});
        assert_eq!(
            store
                .record_revision("default", "web", "aaa", &template)
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .record_revision("default", "web", "aaa", &template)
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .record_revision(
                    "default",
                    "web",
                    "bbb",
                    &serde_json::json!({"image": "web:2"})
                )
                .unwrap(),
            2
        );
        store
            .record_event(&Event {
                time: now(),
                namespace: "default".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                kind_of_event: "Normal".into(),
                reason: "ScalingReplicaSet".into(),
                message: "Scaled up replica set web-aaa to 2".into(),
                uid: None,
            })
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let web = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    let Object::Deployment(d) = web.object else {
        panic!("not a deployment")
    };
    assert_eq!(d.spec.replicas, 2);
    let revisions = store.revisions("default", "web").unwrap();
    let numbers: Vec<u64> = revisions.iter().map(|r| r.0).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(revisions[1].2["image"], "web:2");
    let events = store
        .events(Some("default"), Some(("Deployment", "web")))
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "ScalingReplicaSet");
}

#[test]
fn a_status_by_uid_reaches_that_object_and_never_its_successor() {
    let mut store = Store::in_memory().unwrap();
    let web = objects(&deployment(1, "web:1", ""));
    store.apply(&web).unwrap();
    let first = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    let status =
        Status::from_value(Kind::Deployment, serde_json::json!({"readyReplicas": 1})).unwrap();
    assert!(
        store
            .set_status_of(Kind::Deployment, &first.uid, &status)
            .unwrap()
    );
    let got = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(got.status.to_value()["readyReplicas"], 1);

    // Deleted and made again under the same name: a new uid, and a late
    // status for the old one changes nothing.
    store.delete(Kind::Deployment, "default", "web").unwrap();
    store.apply(&web).unwrap();
    let second = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_ne!(second.uid, first.uid);
    let late =
        Status::from_value(Kind::Deployment, serde_json::json!({"readyReplicas": 7})).unwrap();
    assert!(
        !store
            .set_status_of(Kind::Deployment, &first.uid, &late)
            .unwrap()
    );
    let now = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_ne!(now.status.to_value()["readyReplicas"], 7);
}

const OWNED_PODS: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: rs, uid: owner-1, controller: true}]\nspec: {containers: [{name: c, image: web:1}]}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: rs, uid: owner-2, controller: true}]\nspec: {containers: [{name: c, image: web:1}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec: {containers: [{name: c, image: web:1}]}\n";

#[test]
fn objects_are_found_by_their_controlling_owner() {
    let mut store = Store::in_memory().unwrap();
    store.apply(&objects(OWNED_PODS)).unwrap();
    let owned: Vec<String> = store
        .list_owned(Kind::Pod, "owner-1")
        .unwrap()
        .iter()
        .map(|r| r.object.metadata().name.clone())
        .collect();
    assert_eq!(owned, ["a"]);
    // Orphaned, the pod leaves its owner's list.
    let orphan = objects(&OWNED_PODS.replace(
        "uid: owner-1, controller: true",
        "uid: owner-1, controller: false",
    ));
    store.apply(&orphan).unwrap();
    assert!(store.list_owned(Kind::Pod, "owner-1").unwrap().is_empty());
    assert_eq!(store.list_owned(Kind::Pod, "owner-2").unwrap().len(), 1);
}

#[test]
fn a_database_from_before_the_owner_index_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut store = Store::open(&path).unwrap();
        store.apply(&objects(OWNED_PODS)).unwrap();
        // As an older berth left it: no owner column.
        store
            .conn
            .execute_batch("DROP INDEX objects_by_owner; ALTER TABLE objects DROP COLUMN owner;")
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let owned = store.list_owned(Kind::Pod, "owner-2").unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].object.metadata().name, "b");
}

#[test]
fn pages_follow_the_key_order_and_end() {
    let mut store = Store::in_memory().unwrap();
    store.apply(&objects(OWNED_PODS)).unwrap();
    let names = |records: Vec<Record>| -> Vec<String> {
        records
            .iter()
            .map(|r| r.object.metadata().name.clone())
            .collect()
    };
    assert_eq!(
        names(store.list_page(Kind::Pod, None, None, 2).unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(
            store
                .list_page(Kind::Pod, None, Some(("default", "b")), 2)
                .unwrap()
        ),
        ["c"]
    );
    assert!(
        store
            .list_page(Kind::Pod, Some("other"), None, 2)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_grace_period_of_centuries_is_due_at_the_last_time_rfc_3339_writes() {
    let mut store = Store::in_memory().unwrap();
    store
        .apply(&objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n",
        ))
        .unwrap();
    let uid = store.get(Kind::Pod, "default", "p").unwrap().unwrap().uid;
    let marked = store
        .mark_deleting(Kind::Pod, "default", "p", &uid, u64::MAX, &[])
        .unwrap()
        .unwrap();
    assert_eq!(
        marked.object.metadata().deletion_timestamp.as_deref(),
        Some("9999-12-31T23:59:59Z")
    );
}

fn event_about(kind: &str, name: &str, time: &str) -> Event {
    Event {
        time: time.into(),
        namespace: "default".into(),
        kind: kind.into(),
        name: name.into(),
        kind_of_event: "Normal".into(),
        reason: "Tested".into(),
        message: format!("about {name}"),
        uid: None,
    }
}

#[test]
fn events_take_resource_versions_and_reach_watchers_with_their_object_s_uid() {
    let mut store = Store::in_memory().unwrap();
    store.apply(&objects(&deployment(1, "web:1", ""))).unwrap();
    let uid = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap()
        .uid;
    let before = store.current_version().unwrap();
    let mut objects_changed = store.hub().subscribe(before).unwrap();
    let mut changes = store.event_hub().subscribe(before).unwrap();
    let now = now();
    store
        .record_events(&[
            event_about("Deployment", "web", &now),
            event_about("Pod", "gone", &now),
        ])
        .unwrap();
    let mut seen = Vec::new();
    for change in changes.take().unwrap() {
        let Change::Event(logged) = &*change else {
            panic!("an object changed: {change:?}")
        };
        seen.push((logged.resource_version, logged.uid.clone()));
    }
    assert_eq!(
        seen,
        [(before + 1, Some(uid.clone())), (before + 2, None)],
        "each event its own version, the uid of an object that exists"
    );
    assert_eq!(store.current_version().unwrap(), before + 2);
    assert!(
        objects_changed.take().unwrap().is_empty(),
        "events are not in the objects' window"
    );
    let listed: Vec<u64> = store
        .event_log(Some("default"))
        .unwrap()
        .iter()
        .map(|e| e.resource_version)
        .collect();
    assert_eq!(listed, [before + 1, before + 2]);
    // One that says whose it is keeps that uid, whatever holds the name
    // now (the pod deleted at once, or a same-named successor).
    let carried = Event {
        uid: Some("the-old-one".into()),
        ..event_about("Deployment", "web", &now)
    };
    store.record_events(&[carried]).unwrap();
    let last = store.event_log(Some("default")).unwrap().pop().unwrap();
    assert_eq!(last.uid.as_deref(), Some("the-old-one"));
    assert_eq!(last.event.uid.as_deref(), Some("the-old-one"));
}

#[test]
fn events_older_than_their_time_to_live_expire() {
    let mut store = Store::in_memory().unwrap();
    let two_hours_ago =
        humantime::format_rfc3339_seconds(SystemTime::now() - std::time::Duration::from_secs(7200))
            .to_string();
    store
        .record_events(&[
            event_about("Pod", "old", &two_hours_ago),
            event_about("Pod", "new", &now()),
        ])
        .unwrap();
    let before = store.current_version().unwrap();
    let mut watching = store.event_hub().subscribe(before).unwrap();
    assert_eq!(store.expire_events(EVENT_TTL).unwrap(), 1);
    let left: Vec<String> = store
        .event_log(None)
        .unwrap()
        .into_iter()
        .map(|e| e.event.name)
        .collect();
    assert_eq!(left, ["new"]);
    // Watchers are told, at a version of its own.
    let told = watching.take().unwrap();
    let [gone] = told.as_slice() else {
        panic!("{told:?}")
    };
    let Change::EventGone(event) = &**gone else {
        panic!("{gone:?}")
    };
    assert_eq!(event.event.name, "old");
    assert_eq!(event.resource_version, before + 1);
    assert_eq!(store.current_version().unwrap(), before + 1);
    // Nothing to expire takes no version.
    assert_eq!(store.expire_events(EVENT_TTL).unwrap(), 0);
    assert_eq!(store.current_version().unwrap(), before + 1);
}

#[test]
fn a_database_from_before_event_versions_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut store = Store::open(&path).unwrap();
        store.apply(&objects(&deployment(1, "web:1", ""))).unwrap();
        store
            .record_event(&event_about("Deployment", "web", &now()))
            .unwrap();
        // As an older berth left it: events without a version or uid.
        store
            .conn
            .execute_batch(
                "ALTER TABLE events DROP COLUMN resource_version; ALTER TABLE events DROP COLUMN uid;",
            )
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let web = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    let events = store.event_log(None).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].uid.as_deref(), Some(web.uid.as_str()));
    assert_eq!(events[0].resource_version, store.current_version().unwrap());
}

fn sealer(keys: &[(&str, u8)]) -> Sealer {
    use base64::Engine as _;
    let keys: String = keys
        .iter()
        .map(|(name, byte)| {
            format!(
                "      - name: {name}\n        secret: {}\n",
                base64::engine::general_purpose::STANDARD.encode([*byte; 32])
            )
        })
        .collect();
    Sealer::parse(&format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n{keys}  - identity: {{}}\n"
    ))
    .unwrap()
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: hunter2-sealed}\n";

fn stored_object(store: &Store, name: &str) -> String {
    store
        .conn
        .query_row(
            "SELECT object FROM objects WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .unwrap()
}

#[test]
fn secrets_are_sealed_at_rest_read_plainly_and_sealed_again_when_the_key_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    // Written before sealing was on: stored plain, then sealed at once.
    store.apply(&objects(SECRET)).unwrap();
    // Secrets hold their values in base64.
    let value = "aHVudGVyMi1zZWFsZWQ=";
    assert!(stored_object(&store, "creds").contains(value));
    let resealed = store.seal_with(sealer(&[("k1", 1)])).unwrap();
    assert_eq!(resealed, ["Secret default/creds"]);
    let stored = stored_object(&store, "creds");
    assert!(stored.starts_with("k8s:enc:aesgcm:v1:k1:"), "{stored}");
    let read = store
        .get(Kind::Secret, "default", "creds")
        .unwrap()
        .unwrap();
    let Object::Secret(secret) = &read.object else {
        panic!("not a secret")
    };
    assert_eq!(secret.data["password"], value);
    // The same apply again changes nothing, sealed or not.
    assert_eq!(store.apply(&objects(SECRET)).unwrap(), [Outcome::Unchanged]);
    drop(store);
    let raw = std::fs::read(&path).unwrap();
    assert!(
        !raw.windows(value.len()).any(|w| w == value.as_bytes()),
        "the plain value is still in the database file"
    );

    // A new key first: everything is sealed with it on opening.
    let mut store = Store::open(&path).unwrap();
    let resealed = store.seal_with(sealer(&[("k2", 2), ("k1", 1)])).unwrap();
    assert_eq!(resealed.len(), 1);
    assert!(stored_object(&store, "creds").starts_with("k8s:enc:aesgcm:v1:k2:"));
    assert!(store.seal_with(sealer(&[("k2", 2)])).unwrap().is_empty());
    // Without the key it was sealed with, it cannot be read: said, and
    // nothing changes.
    let e = store
        .seal_with(sealer(&[("k3", 3)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("default/creds") && e.contains("\"k2\""), "{e}");
    // Nor with a key of its name but other bytes.
    let e = store
        .seal_with(sealer(&[("k2", 9)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("default/creds") && e.contains("altered"), "{e}");
    assert!(stored_object(&store, "creds").starts_with("k8s:enc:aesgcm:v1:k2:"));
    // The same found by reading only, as a daemon taking over checks.
    let e = check_sealed(&path, &sealer(&[("k3", 3)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("default/creds") && e.contains("\"k2\""), "{e}");
    check_sealed(&path, &sealer(&[("k2", 2)])).unwrap();
    check_sealed(&dir.path().join("none.db"), &sealer(&[("k3", 3)])).unwrap();
}

#[test]
fn a_closed_store_refuses_every_write_and_still_reads() {
    let mut store = Store::in_memory().unwrap();
    store.apply(&objects(SECRET)).unwrap();
    store.close();
    let refused = |e: StateError| assert!(e.to_string().contains("handed the store over"), "{e}");
    refused(
        store
            .apply(&objects(&deployment(1, "web:1", "")))
            .unwrap_err(),
    );
    refused(store.delete(Kind::Secret, "default", "creds").unwrap_err());
    refused(store.expire_events(std::time::Duration::ZERO).unwrap_err());
    refused(
        store
            .record_events(&[event_about("Pod", "p", &now())])
            .unwrap_err(),
    );
    assert!(
        store
            .get(Kind::Secret, "default", "creds")
            .unwrap()
            .is_some()
    );
}

#[test]
fn visitors_see_objects_where_they_are_parsed_and_forget_the_deleted() {
    let mut store = Store::in_memory().unwrap();
    store.apply(&objects(OWNED_PODS)).unwrap();
    let mut seen = Vec::new();
    store
        .visit(Kind::Pod, |pod| {
            seen.push((pod.object.metadata().name.clone(), pod.generation));
        })
        .unwrap();
    assert_eq!(
        seen,
        [
            ("a".to_owned(), 1),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1)
        ]
    );
    let mut owned = Vec::new();
    store
        .visit_owned(Kind::Pod, "owner-2", |pod| {
            owned.push(pod.object.metadata().name.clone());
        })
        .unwrap();
    assert_eq!(owned, ["b"]);
    // A changed pod is seen as it is now.
    let changed = objects(&OWNED_PODS.replace("name: c}", "name: c, labels: {x: y}}"));
    store.apply(&changed).unwrap();
    let mut labels = None;
    store
        .visit(Kind::Pod, |pod| {
            if pod.object.metadata().name == "c" {
                labels = Some(pod.object.metadata().labels.clone());
            }
        })
        .unwrap();
    assert_eq!(labels.unwrap().get("x").map(String::as_str), Some("y"));
    // A deleted one leaves the parse cache with the next visit.
    store.delete(Kind::Pod, "default", "a").unwrap();
    store.visit(Kind::Pod, |_| {}).unwrap();
    assert_eq!(store.parsed.borrow().len(), 2);
}

#[test]
fn a_status_written_by_uid_is_read_back_as_stored_without_parsing_the_object_again() {
    let mut store = Store::in_memory().unwrap();
    store.apply(&objects(OWNED_PODS)).unwrap();
    let before = store.get(Kind::Pod, "default", "a").unwrap().unwrap();
    let status = Status::from_value(
        Kind::Pod,
        serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
    )
    .unwrap();
    assert!(
        store
            .set_status_of(Kind::Pod, &before.uid, &status)
            .unwrap()
    );
    let cached = store.get(Kind::Pod, "default", "a").unwrap().unwrap();
    assert!(cached.resource_version > before.resource_version);
    assert!(cached.status.pod_ready());
    let cached_size = store.size_of(&cached.uid);
    // What the cache kept is what a fresh read of the stored texts gives.
    store.parsed.borrow_mut().clear();
    let fresh = store.get(Kind::Pod, "default", "a").unwrap().unwrap();
    assert_eq!(fresh.resource_version, cached.resource_version);
    assert_eq!(fresh.status, cached.status);
    assert_eq!(fresh.object, cached.object);
    assert_eq!(store.size_of(&fresh.uid), cached_size);
}

#[test]
fn statuses_written_as_a_batch_take_a_version_each_and_refuse_only_their_own() {
    let mut store = Store::in_memory().unwrap();
    store.apply(&objects(OWNED_PODS)).unwrap();
    let uid = |name: &str| store.get(Kind::Pod, "default", name).unwrap().unwrap().uid;
    let (a, b) = (uid("a"), uid("b"));
    let before = store.current_version().unwrap();
    let mut watching = store.hub().subscribe(before).unwrap();
    let running = Status::from_value(Kind::Pod, serde_json::json!({"phase": "Running"})).unwrap();
    let pending = Status::from_value(Kind::Pod, serde_json::json!({"phase": "Pending"})).unwrap();
    let not_a_pod_s = Status::from_value(
        Kind::Deployment,
        serde_json::json!({"replicas": 1, "readyReplicas": 1}),
    )
    .unwrap();
    let outcomes = store
        .set_statuses_of(
            Kind::Pod,
            &[
                (&a, &running),
                ("gone", &running),
                (&b, &not_a_pod_s),
                (&b, &pending),
            ],
        )
        .unwrap();
    assert!(matches!(outcomes[0], Ok(true)));
    assert!(matches!(outcomes[1], Ok(false)), "a pod that is gone");
    assert!(matches!(outcomes[2], Err(StateError::Rejected(_))));
    assert!(matches!(outcomes[3], Ok(true)));
    // Each stored status its own version, in order, and a change for each.
    let (a_now, b_now) = (
        store.get(Kind::Pod, "default", "a").unwrap().unwrap(),
        store.get(Kind::Pod, "default", "b").unwrap().unwrap(),
    );
    assert_eq!(a_now.status, running);
    assert_eq!(b_now.status, pending);
    assert!(before < a_now.resource_version && a_now.resource_version < b_now.resource_version);
    assert!(b_now.resource_version <= store.current_version().unwrap());
    let changed: Vec<String> = watching
        .take()
        .unwrap()
        .iter()
        .map(|change| match &**change {
            Change::Object { record, .. } => record.object.metadata().name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(changed, ["a", "b"]);
}
