//! Storage, as Kubernetes' persistent-volume controller and k3s's
//! local-path provisioner do it: a claim is bound to an available volume
//! that fits it (class, size, access modes), or, of class `local-path`, to
//! a new volume: a directory of its own under `$BERTH_HOME/volumes`. A
//! volume whose claim is gone is Released, and deleted with its data when
//! its reclaim policy says Delete.

use std::path::Path;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimStatus, PersistentVolumeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use super::Controllers;
use crate::spec::objects::{
    AccessMode, ClaimRef, HostPath, LOCAL_PATH, LOCAL_PATH_PROVISIONER, ObjectMeta, PROVISIONED_BY,
    PersistentVolume, PersistentVolumeClaim, Pod, ReclaimPolicy, StorageList, VolumeSpec,
};
use crate::spec::{Kind, Object, Status};
use crate::state::{Record, Result, Store};

fn bytes(list: &StorageList) -> u128 {
    list.storage.as_ref().map_or(0, |q| q.ceil_units())
}

/// Whether `volume` can serve `claim`: its class, room enough, and every
/// access mode the claim asks for.
fn fits(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let class = |c: &Option<String>| c.clone().unwrap_or_default();
    class(&volume.spec.storage_class_name) == class(&claim.spec.storage_class_name)
        && bytes(&volume.spec.capacity) >= bytes(&claim.spec.resources.requests)
        && claim
            .spec
            .access_modes
            .iter()
            .all(|m| volume.spec.access_modes.contains(m))
}

/// Whether `volume` may go to claim `ns/name`: it is free, or made for
/// that claim by name (a `claimRef` without a uid, as a volume made by hand
/// for one claim says).
fn offered_to(volume: &PersistentVolume, ns: &str, name: &str) -> bool {
    match &volume.spec.claim_ref {
        None => true,
        Some(claim) => {
            claim.uid.is_none()
                && claim.name.as_deref() == Some(name)
                && claim.namespace.as_deref().unwrap_or("default") == ns
        }
    }
}

fn mode_names(modes: &[AccessMode]) -> Vec<String> {
    modes
        .iter()
        .map(|m| {
            serde_json::to_value(m)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect()
}

fn claim_status(phase: &str, volume: Option<&PersistentVolume>) -> Status {
    Status::PersistentVolumeClaim(Box::new(PersistentVolumeClaimStatus {
        phase: Some(phase.into()),
        access_modes: volume.map(|v| mode_names(&v.spec.access_modes)),
        capacity: volume.and_then(|v| {
            let size = v.spec.capacity.storage.as_ref()?;
            Some([("storage".to_owned(), KubeQuantity(size.to_string()))].into())
        }),
        ..PersistentVolumeClaimStatus::default()
    }))
}

impl Controllers {
    /// Binds, provisions and reclaims; whether anything changed.
    pub(super) fn reconcile_volumes(&self, store: &mut Store) -> Result<bool> {
        let mut changed = false;
        let mut volumes = store.list(Kind::PersistentVolume, None)?;
        for record in store.list(Kind::PersistentVolumeClaim, None)? {
            let Object::PersistentVolumeClaim(claim) = &record.object else {
                continue;
            };
            if claim.metadata.deleting() {
                // Held for its pods: it goes once none uses it.
                let ns = record.object.namespace().unwrap_or("default").to_owned();
                if !claim_in_use(store, &ns, &claim.metadata.name)? {
                    changed |= store.delete_if(
                        Kind::PersistentVolumeClaim,
                        &ns,
                        &claim.metadata.name,
                        &record.uid,
                    )?;
                }
                continue;
            }
            changed |= self.bind_claim(store, &record, claim, &mut volumes)?;
        }
        for record in store.list(Kind::PersistentVolume, None)? {
            changed |= self.reclaim(store, &record)?;
        }
        Ok(changed)
    }

    fn bind_claim(
        &self,
        store: &mut Store,
        record: &Record,
        claim: &PersistentVolumeClaim,
        volumes: &mut Vec<Record>,
    ) -> Result<bool> {
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        let name = claim.metadata.name.clone();
        let claimed_by_it = |v: &PersistentVolume| {
            v.spec
                .claim_ref
                .as_ref()
                .is_some_and(|r| r.uid.as_deref() == Some(record.uid.as_str()))
        };
        let volume_of = |records: &[Record], wanted: &str| {
            records.iter().find_map(|r| match &r.object {
                Object::PersistentVolume(v) if v.metadata.name == wanted => Some((**v).clone()),
                _ => None,
            })
        };
        let mut changed = false;
        let mut events = Vec::new();
        let status = match claim.spec.volume_name.as_deref() {
            Some(wanted) => match volume_of(volumes, wanted) {
                Some(volume) if claimed_by_it(&volume) => claim_status("Bound", Some(&volume)),
                Some(volume) if offered_to(&volume, &ns, &name) && fits(&volume, claim) => {
                    self.claim_volume(store, volume.clone(), record, &ns)?;
                    *volumes = store.list(Kind::PersistentVolume, None)?;
                    changed = true;
                    claim_status("Bound", Some(&volume))
                }
                // Its volume went: its data is gone with it.
                None if matches!(record.status.storage_phase(), Some("Bound" | "Lost")) => {
                    claim_status("Lost", None)
                }
                _ => claim_status("Pending", None),
            },
            None => {
                let mut candidates: Vec<PersistentVolume> = volumes
                    .iter()
                    .filter_map(|r| match &r.object {
                        Object::PersistentVolume(v)
                            if offered_to(v, &ns, &name)
                                && !v.metadata.deleting()
                                && fits(v, claim) =>
                        {
                            Some((**v).clone())
                        }
                        _ => None,
                    })
                    .collect();
                candidates.sort_by_key(|v| bytes(&v.spec.capacity));
                let volume = match candidates.into_iter().next() {
                    Some(volume) => Some(volume),
                    None if claim.spec.storage_class_name.as_deref() == Some(LOCAL_PATH) => {
                        let volume = self.provision(claim, &record.uid, &ns)?;
                        events.push(super::event_of(
                            &ns,
                            "PersistentVolumeClaim",
                            &name,
                            "Normal",
                            "ProvisioningSucceeded",
                            &format!("Successfully provisioned volume {}", volume.metadata.name),
                        ));
                        store.apply(&[Object::PersistentVolume(Box::new(volume.clone()))])?;
                        Some(volume)
                    }
                    None => None,
                };
                match volume {
                    Some(volume) => {
                        self.claim_volume(store, volume.clone(), record, &ns)?;
                        let mut bound = claim.clone();
                        bound.spec.volume_name = Some(volume.metadata.name.clone());
                        store.apply(&[Object::PersistentVolumeClaim(Box::new(bound))])?;
                        *volumes = store.list(Kind::PersistentVolume, None)?;
                        changed = true;
                        claim_status("Bound", Some(&volume))
                    }
                    None => {
                        if record.status.storage_phase() != Some("Pending") {
                            events.push(super::event_of(
                                &ns,
                                "PersistentVolumeClaim",
                                &name,
                                "Normal",
                                "FailedBinding",
                                "no persistent volumes available for this claim and no storage class is set",
                            ));
                        }
                        claim_status("Pending", None)
                    }
                }
            }
        };
        if status != record.status {
            store.set_status(Kind::PersistentVolumeClaim, &ns, &name, &status)?;
            changed = true;
        }
        if !events.is_empty() {
            store.record_events(&events)?;
        }
        Ok(changed)
    }

    /// Records on `volume` that the claim `record` holds it.
    fn claim_volume(
        &self,
        store: &mut Store,
        mut volume: PersistentVolume,
        record: &Record,
        ns: &str,
    ) -> Result<()> {
        volume.spec.claim_ref = Some(ClaimRef {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(ns.to_owned()),
            name: Some(record.object.metadata().name.clone()),
            uid: Some(record.uid.clone()),
            resource_version: None,
        });
        let name = volume.metadata.name.clone();
        store.apply(&[Object::PersistentVolume(Box::new(volume))])?;
        let bound = Status::PersistentVolume(PersistentVolumeStatus {
            phase: Some("Bound".into()),
            ..PersistentVolumeStatus::default()
        });
        store.set_status(Kind::PersistentVolume, "", &name, &bound)?;
        Ok(())
    }

    /// A new local-path volume for `claim`: its directory made now, so it
    /// is there for the first pod, and named as k3s names them.
    fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        uid: &str,
        ns: &str,
    ) -> Result<PersistentVolume> {
        let name = format!("pvc-{uid}");
        let dir = self
            .volumes_dir
            .as_deref()
            .unwrap_or(Path::new("/nonexistent"));
        let path = dir.join(format!("{name}_{ns}_{}", claim.metadata.name));
        if self.volumes_dir.is_some()
            && let Err(e) = std::fs::create_dir_all(&path)
        {
            tracing::warn!("provisioning {}: {e}", path.display());
        }
        Ok(PersistentVolume {
            metadata: ObjectMeta {
                name,
                annotations: [(PROVISIONED_BY.to_owned(), LOCAL_PATH_PROVISIONER.to_owned())]
                    .into(),
                ..ObjectMeta::default()
            },
            spec: VolumeSpec {
                capacity: claim.spec.resources.requests.clone(),
                access_modes: claim.spec.access_modes.clone(),
                persistent_volume_reclaim_policy: Some(ReclaimPolicy::Delete),
                storage_class_name: Some(LOCAL_PATH.into()),
                host_path: Some(HostPath {
                    path: path.to_string_lossy().into_owned(),
                    kind: Some("DirectoryOrCreate".into()),
                }),
                volume_mode: Some("Filesystem".into()),
                ..VolumeSpec::default()
            },
        })
    }

    /// A volume's phase from its claim; one whose claim is gone is
    /// Released, or deleted (with its directory, if berth made it) when
    /// its policy is Delete.
    fn reclaim(&self, store: &mut Store, record: &Record) -> Result<bool> {
        let Object::PersistentVolume(volume) = &record.object else {
            return Ok(false);
        };
        let phase = match &volume.spec.claim_ref {
            // Free, or kept for a claim by name that has not come yet.
            None => "Available",
            Some(claim) if claim.uid.is_none() => "Available",
            Some(claim) => {
                let ns = claim.namespace.as_deref().unwrap_or("default");
                let name = claim.name.as_deref().unwrap_or("");
                let held = store
                    .get(Kind::PersistentVolumeClaim, ns, name)?
                    .is_some_and(|c| claim.uid.as_deref().is_none_or(|uid| uid == c.uid));
                if held {
                    "Bound"
                } else if volume.spec.persistent_volume_reclaim_policy
                    == Some(ReclaimPolicy::Delete)
                {
                    self.remove_data(volume);
                    store.delete(Kind::PersistentVolume, "", &volume.metadata.name)?;
                    return Ok(true);
                } else {
                    "Released"
                }
            }
        };
        let status = Status::PersistentVolume(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..PersistentVolumeStatus::default()
        });
        if status == record.status {
            return Ok(false);
        }
        store.set_status(Kind::PersistentVolume, "", &volume.metadata.name, &status)?;
        Ok(true)
    }

    /// Removes a provisioned volume's directory: only the very one the
    /// provisioner made for its claim (named by the claim's uid, namespace
    /// and name, under the volumes directory), whatever the volume says
    /// of itself: an annotation or a path anyone could write never points
    /// it elsewhere.
    fn remove_data(&self, volume: &PersistentVolume) {
        let ours = volume
            .metadata
            .annotations
            .get(PROVISIONED_BY)
            .map(String::as_str)
            == Some(LOCAL_PATH_PROVISIONER);
        let (Some(dir), Some(path), Some(claim)) = (
            &self.volumes_dir,
            volume.spec.path(),
            &volume.spec.claim_ref,
        ) else {
            return;
        };
        let (Some(uid), Some(ns), Some(name)) = (&claim.uid, &claim.namespace, &claim.name) else {
            return;
        };
        let made = dir.join(format!("pvc-{uid}_{ns}_{name}"));
        let path = Path::new(path);
        if !ours || volume.metadata.name != format!("pvc-{uid}") || path != made {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("removing the data of volume {}: {e}", volume.metadata.name);
        }
    }
}

/// Deletes a claim as a controller does (the garbage collector, a
/// StatefulSet's retention policy): at once when no pod uses it, else
/// marked with pvc-protection, to go once none does.
pub fn delete_claim(store: &mut Store, record: &Record) -> Result<()> {
    let ns = record.object.namespace().unwrap_or("default").to_owned();
    let name = record.object.metadata().name.clone();
    if claim_in_use(store, &ns, &name)? {
        store.mark_deleting(
            Kind::PersistentVolumeClaim,
            &ns,
            &name,
            &record.uid,
            0,
            &[crate::spec::objects::PVC_PROTECTION],
        )?;
    } else {
        store.delete_if(Kind::PersistentVolumeClaim, &ns, &name, &record.uid)?;
    }
    Ok(())
}

/// Whether a pod on a node, not yet finished, uses claim `name`.
pub fn claim_in_use(store: &Store, ns: &str, name: &str) -> Result<bool> {
    claim_used(store, ns, name, None)
}

/// [`claim_in_use`], by a pod other than the one whose uid is `except`.
/// As Kubernetes' pvc-protection: a pod not yet on a node holds nothing
/// (and could not be placed on a claim being deleted).
fn claim_used(store: &Store, ns: &str, name: &str, except: Option<&str>) -> Result<bool> {
    Ok(store.list(Kind::Pod, Some(ns))?.into_iter().any(|pod| {
        let Object::Pod(p) = &pod.object else {
            return false;
        };
        Some(pod.uid.as_str()) != except
            && p.spec.node_name.is_some()
            && !pod.status.pod_finished()
            && p.spec.volumes.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == name)
            })
    }))
}

/// Why a pod cannot go to a node yet for its claims, as kube-scheduler's
/// volume plugins say it: a claim missing, unbound, being deleted, or
/// ReadWriteOncePod and used by another pod.
/// `taken`: the ReadWriteOncePod claims given to pods earlier in the same
/// pass (not yet in the store); a claim of this pod's that is one is added.
pub fn claims_block(
    store: &Store,
    pod: &Pod,
    uid: &str,
    nodes: usize,
    taken: &mut std::collections::BTreeSet<(String, String)>,
) -> Result<Option<String>> {
    let mut once = Vec::new();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for volume in &pod.spec.volumes {
        let Some(source) = &volume.persistent_volume_claim else {
            continue;
        };
        let name = &source.claim_name;
        let Some(claim) = store.get(Kind::PersistentVolumeClaim, ns, name)? else {
            return Ok(Some(format!("persistentvolumeclaim \"{name}\" not found")));
        };
        if claim.object.metadata().deleting() {
            return Ok(Some(format!(
                "persistentvolumeclaim \"{name}\" is being deleted"
            )));
        }
        if claim.status.storage_phase() != Some("Bound") {
            return Ok(Some(format!(
                "0/{nodes} nodes are available: pod has unbound immediate PersistentVolumeClaims."
            )));
        }
        let Object::PersistentVolumeClaim(c) = &claim.object else {
            continue;
        };
        if c.spec.access_modes.contains(&AccessMode::ReadWriteOncePod) {
            let key = (ns.to_owned(), name.clone());
            let in_use = taken.contains(&key) || claim_used(store, ns, name, Some(uid))?;
            if in_use {
                return Ok(Some(format!(
                    "0/{nodes} nodes are available: {nodes} node has pod using \
                     PersistentVolumeClaim with the same name and ReadWriteOncePod access mode."
                )));
            }
            once.push(key);
        }
    }
    taken.extend(once);
    Ok(None)
}
