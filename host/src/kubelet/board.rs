//! One pod's status as its containers make it: the app containers report
//! the pod as a whole (phase, conditions, their statuses), each init
//! container and sidecar its own entry, from tasks of their own; every
//! change is posted whole, as the kubelet posts a pod's status.
//!
//! A sidecar that is not ready makes the pod not ready, as in Kubernetes:
//! Services stop sending to it until it is again.

use std::sync::Arc;

use crate::spec::objects::Pod;
use crate::spec::status::{ContainerStatus, PodStatus};

use super::Context;

pub(crate) struct Board {
    context: Context,
    uid: String,
    pod: Arc<Pod>,
    inner: parking_lot::Mutex<Inner>,
}

struct Inner {
    /// What the app containers last reported (None: they have not yet).
    apps: Option<PodStatus>,
    apps_ready: bool,
    /// One per init container, in order, once it has something to show.
    init: Vec<Option<ContainerStatus>>,
}

impl Board {
    /// The uid of the pod it reports on.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn new(context: Context, uid: String, pod: Arc<Pod>) -> Board {
        let init = vec![None; pod.spec.init_containers.len()];
        Board {
            context,
            uid,
            pod,
            inner: parking_lot::Mutex::new(Inner {
                apps: None,
                apps_ready: false,
                init,
            }),
        }
    }

    /// The app containers' view of the pod, and whether they are all
    /// ready (what the router sends requests by).
    pub fn apps(&self, status: PodStatus, ready: bool) {
        let mut inner = self.inner.lock();
        inner.apps = Some(status);
        inner.apps_ready = ready;
        self.post(&inner);
    }

    /// Init container `index` as it is now.
    pub fn init(&self, index: usize, status: ContainerStatus) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.init.get_mut(index) {
            *entry = Some(status);
        }
        self.post(&inner);
    }

    /// The status posted, whole; and the pod's readiness to the router.
    fn post(&self, inner: &Inner) {
        let sidecars_ready = self
            .pod
            .spec
            .init_containers
            .iter()
            .zip(&inner.init)
            .filter(|(c, _)| c.is_sidecar())
            .all(|(_, s)| s.as_ref().is_some_and(|s| s.ready));
        // Nothing is posted before the pod's first report (its
        // initializing one, when it has init containers).
        let Some(mut status) = inner.apps.clone() else {
            return;
        };
        if !inner.init.is_empty() {
            status.kube.init_container_statuses =
                Some(inner.init.iter().flatten().cloned().collect());
        }
        if !sidecars_ready {
            for condition in status.kube.conditions.iter_mut().flatten() {
                if condition.type_ == "Ready" || condition.type_ == "ContainersReady" {
                    condition.status = "False".into();
                }
            }
        }
        self.context
            .routes
            .set_ready(&self.uid, inner.apps_ready && sidecars_ready);
        self.context.set_status(&self.uid, &self.pod, status);
    }
}
