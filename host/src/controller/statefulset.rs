//! The StatefulSet controller, as kube-controller-manager's: pods named by
//! ordinal (`web-0`, `web-1`…), each with claims of its own from the
//! volume claim templates (`data-web-0`), kept across restarts and
//! scale-downs. OrderedReady starts them one at a time, each once the ones
//! before it are Running and Ready, and stops them from the highest down;
//! Parallel does both at once. A changed template rolls out from the
//! highest ordinal down to the partition, one pod at a time.
//!
//! Unlike Kubernetes, berth keeps no ControllerRevisions: a pod below the
//! partition that is deleted comes back at the new revision.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSetStatus;

use super::{Controllers, delete_gracefully, owner, template_hash};
use crate::spec::objects::{
    ClaimVolume, ObjectMeta, PersistentVolumeClaim, Pod, PodManagementPolicy, REVISION_HASH,
    RetentionPolicy, STS_POD_INDEX, STS_POD_NAME, StatefulSet, StatefulSetUpdateType, Volume,
};
use crate::spec::{Kind, Object, Status};
use crate::state::{Record, Result, Store};

/// The ordinal of a pod of set `set`, from its name.
fn ordinal(set: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(pod: &Record) -> bool {
    pod.status.pod_ready() && !pod.object.metadata().deleting()
}

/// The set's revision: `<set>-<hash of its template>`.
fn revision(set: &StatefulSet) -> String {
    let mut template = set.spec.template.clone();
    crate::spec::defaults::canonical(&mut template.spec);
    let hash = template_hash(&serde_json::to_value(&template).expect("JSON"));
    format!("{}-{hash}", set.metadata.name)
}

fn claim_name(template: &str, set: &str, ordinal: u32) -> String {
    format!("{template}-{set}-{ordinal}")
}

impl Controllers {
    pub(super) fn reconcile_statefulset(&self, store: &mut Store, record: &Record) -> Result<bool> {
        let Object::StatefulSet(set) = &record.object else {
            return Ok(false);
        };
        if set.metadata.deleting() {
            return self.finish_foreground(store, record);
        }
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        let name = set.metadata.name.clone();
        let update_revision = revision(set);
        let start = set.spec.ordinals.as_ref().map_or(0, |o| o.start);
        let end = start.saturating_add(set.spec.replicas);
        let ordered = set.spec.pod_management_policy != Some(PodManagementPolicy::Parallel);
        let mut changed = false;
        let mut events = Vec::new();
        let event = |reason: &str, message: String| {
            super::event_of(&ns, "StatefulSet", &name, "Normal", reason, &message)
        };

        let mut pods: BTreeMap<u32, Record> = BTreeMap::new();
        for pod in super::owned(store, Kind::Pod, &ns, record)? {
            match ordinal(&name, &pod.object.metadata().name) {
                Some(i) => {
                    pods.insert(i, pod);
                }
                None => {
                    delete_gracefully(store, &pod)?;
                    changed = true;
                }
            }
        }

        // Pods that failed are replaced, as a pod of the set must run.
        for pod in pods.values() {
            if pod.status.pod_finished() && !pod.object.metadata().deleting() {
                store.delete_if(Kind::Pod, &ns, &pod.object.metadata().name, &pod.uid)?;
                changed = true;
            }
        }
        if changed {
            pods.retain(|_, p| {
                store
                    .get(Kind::Pod, &ns, &p.object.metadata().name)
                    .ok()
                    .flatten()
                    .is_some()
            });
        }

        // Up: each missing ordinal, in order; OrderedReady waits for the
        // ones before it.
        let mut blocked = false;
        for i in start..end {
            match pods.get(&i) {
                Some(pod) => {
                    // A claim gone since (deleted by hand) is made again,
                    // or the pod could never be placed.
                    self.ensure_claims(store, record, set, &ns, i)?;
                    if ordered && !running_and_ready(pod) {
                        blocked = true;
                        break;
                    }
                }
                None => {
                    // As a replica set: no pod past the namespace's quota
                    // (a million replicas are not a million stored pods).
                    if store.count_active_pods(&ns)? >= self.pod_quota {
                        store.record_event_unless_repeated(&super::event_of(
                            &ns,
                            "StatefulSet",
                            &name,
                            "Warning",
                            "FailedCreate",
                            &format!(
                                "create Pod {name}-{i} in StatefulSet {name} failed: exceeded \
                                 quota: the {} pods a namespace may hold are running (see \
                                 --pod-quota)",
                                self.pod_quota
                            ),
                        ))?;
                        blocked = true;
                        break;
                    }
                    self.ensure_claims(store, record, set, &ns, i)?;
                    let pod = pod_for(set, record, &ns, i, &update_revision);
                    let pod_name = pod.metadata.name.clone();
                    store.apply(&[Object::Pod(Box::new(pod))])?;
                    events.push(event(
                        "SuccessfulCreate",
                        format!("create Pod {pod_name} in StatefulSet {name} successful"),
                    ));
                    changed = true;
                    if ordered {
                        blocked = true;
                        break;
                    }
                }
            }
        }

        // Down: ordinals past the count, the highest first (one at a time,
        // once the rest are ready, for OrderedReady).
        let extra: Vec<u32> = pods
            .keys()
            .rev()
            .copied()
            .filter(|i| *i >= end || *i < start)
            .collect();
        if !blocked || !ordered {
            for i in extra {
                let pod = &pods[&i];
                if !pod.object.metadata().deleting() {
                    let pod_name = pod.object.metadata().name.clone();
                    delete_gracefully(store, pod)?;
                    events.push(event(
                        "SuccessfulDelete",
                        format!("delete Pod {pod_name} in StatefulSet {name} successful"),
                    ));
                    if set
                        .spec
                        .persistent_volume_claim_retention_policy
                        .as_ref()
                        .and_then(|p| p.when_scaled)
                        == Some(RetentionPolicy::Delete)
                    {
                        // Held (pvc-protection) until the pod has gone.
                        for template in &set.spec.volume_claim_templates {
                            let claim = claim_name(&template.metadata.name, &name, i);
                            if let Some(record) =
                                store.get(Kind::PersistentVolumeClaim, &ns, &claim)?
                            {
                                super::volumes::delete_claim(store, &record)?;
                            }
                        }
                    }
                    changed = true;
                }
                if ordered {
                    blocked = true;
                    break;
                }
            }
        }

        // A new template: from the highest ordinal down to the partition,
        // the first pod at an older revision goes (and comes back at the
        // new one), once every pod is ready.
        let strategy = set.spec.update_strategy.clone().unwrap_or_default();
        if !blocked && strategy.kind != Some(StatefulSetUpdateType::OnDelete) {
            let partition = strategy
                .rolling_update
                .and_then(|r| r.partition)
                .unwrap_or(0);
            let all_ready = (start..end).all(|i| pods.get(&i).is_some_and(running_and_ready));
            if all_ready
                && let Some(pod) = (start.max(partition)..end)
                    .rev()
                    .filter_map(|i| pods.get(&i))
                    .find(|p| {
                        p.object.metadata().labels.get(REVISION_HASH) != Some(&update_revision)
                    })
            {
                let pod_name = pod.object.metadata().name.clone();
                delete_gracefully(store, pod)?;
                events.push(event(
                    "SuccessfulDelete",
                    format!("delete Pod {pod_name} in StatefulSet {name} successful"),
                ));
                changed = true;
            }
        }

        // Status, counted from the pods as they are now.
        let pods: Vec<Record> = super::owned(store, Kind::Pod, &ns, record)?
            .into_iter()
            .filter(|p| !p.object.metadata().deleting())
            .collect();
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let ready = pods.iter().filter(|p| p.status.pod_ready()).count();
        let updated = pods
            .iter()
            .filter(|p| p.object.metadata().labels.get(REVISION_HASH) == Some(&update_revision))
            .count();
        // The current revision is the update one once every pod runs it.
        let current_revision = if updated == pods.len() && pods.len() as u32 == set.spec.replicas {
            update_revision.clone()
        } else {
            record
                .status
                .stateful_set()
                .and_then(|s| s.current_revision.clone())
                .unwrap_or_else(|| update_revision.clone())
        };
        let current = pods
            .iter()
            .filter(|p| p.object.metadata().labels.get(REVISION_HASH) == Some(&current_revision))
            .count();
        let status = Status::from(StatefulSetStatus {
            observed_generation: i64::try_from(record.generation).ok(),
            replicas: count(pods.len()),
            ready_replicas: Some(count(ready)),
            available_replicas: Some(count(ready)),
            current_replicas: Some(count(current)),
            updated_replicas: Some(count(updated)),
            current_revision: Some(current_revision),
            update_revision: Some(update_revision),
            collision_count: Some(0),
            ..StatefulSetStatus::default()
        });
        if status != record.status {
            store.set_status(Kind::StatefulSet, &ns, &name, &status)?;
            changed = true;
        }
        if !events.is_empty() {
            store.record_events(&events)?;
        }
        Ok(changed)
    }

    /// Makes the claims pod `ordinal` of the set is to have, from its
    /// templates, where they are missing: kept from an earlier pod of that
    /// ordinal otherwise.
    fn ensure_claims(
        &self,
        store: &mut Store,
        record: &Record,
        set: &StatefulSet,
        ns: &str,
        ordinal: u32,
    ) -> Result<()> {
        let delete_with_set = set
            .spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_deleted)
            == Some(RetentionPolicy::Delete);
        let mut made = Vec::new();
        for template in &set.spec.volume_claim_templates {
            let name = claim_name(&template.metadata.name, &set.metadata.name, ordinal);
            if store.get(Kind::PersistentVolumeClaim, ns, &name)?.is_some() {
                continue;
            }
            let mut labels = template.metadata.labels.clone();
            labels.extend(set.spec.selector.match_labels.clone());
            let mut spec = template.spec.clone();
            spec.storage_class_name
                .get_or_insert_with(|| crate::spec::objects::LOCAL_PATH.into());
            made.push(Object::PersistentVolumeClaim(Box::new(
                PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name,
                        namespace: Some(ns.to_owned()),
                        labels,
                        annotations: template.metadata.annotations.clone(),
                        owner_references: if delete_with_set {
                            vec![owner("StatefulSet", "apps/v1", record)]
                        } else {
                            Vec::new()
                        },
                        ..ObjectMeta::default()
                    },
                    spec,
                },
            )));
        }
        if !made.is_empty() {
            store.apply(&made)?;
        }
        Ok(())
    }
}

/// Pod `ordinal` of `set`: its stable name and labels, and its claims in
/// place of the templates' volumes.
fn pod_for(set: &StatefulSet, record: &Record, ns: &str, ordinal: u32, revision: &str) -> Pod {
    let name = format!("{}-{ordinal}", set.metadata.name);
    let mut template = set.spec.template.clone();
    template.spec.node_name = None;
    let mut labels = template.metadata.labels;
    labels.insert(STS_POD_NAME.into(), name.clone());
    labels.insert(STS_POD_INDEX.into(), ordinal.to_string());
    labels.insert(REVISION_HASH.into(), revision.to_owned());
    for claim in &set.spec.volume_claim_templates {
        template
            .spec
            .volumes
            .retain(|v| v.name != claim.metadata.name);
        template.spec.volumes.push(Volume {
            name: claim.metadata.name.clone(),
            config_map: None,
            secret: None,
            empty_dir: None,
            host_path: None,
            image: None,
            persistent_volume_claim: Some(ClaimVolume {
                claim_name: claim_name(&claim.metadata.name, &set.metadata.name, ordinal),
                read_only: false,
            }),
        });
    }
    Pod {
        metadata: ObjectMeta {
            name,
            namespace: Some(ns.to_owned()),
            labels,
            annotations: template.metadata.annotations,
            owner_references: vec![owner("StatefulSet", "apps/v1", record)],
            ..ObjectMeta::default()
        },
        spec: template.spec,
    }
}
