//! Kubernetes' defaults inside pod specs, kept at the edges.
//!
//! kube-apiserver stores a pod template with its defaults filled in, and
//! finds a Deployment's current ReplicaSet by comparing templates. berth
//! stores pod specs canonical instead (a field equal to its default is left
//! out) and fills the defaults in only where an object is shown. So a
//! template hashes the same whether its manifest spelt a default out or
//! not, a `kubectl replace` of what `kubectl get -o yaml` printed rolls
//! nothing out, and a default berth learns later never changes the hash of
//! what is already stored.

use super::objects::{Container, PodSecurityContext, PodSpec, PullPolicy};

const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
const TERMINATION_MESSAGE_POLICY: &str = "File";
const DNS_POLICY: &str = "ClusterFirst";
const SERVICE_ACCOUNT: &str = "default";
const PROTOCOL: &str = "TCP";

/// berth's default pull policy: the local image if there is one, for any
/// tag. (Kubernetes pulls `:latest` always; berth's images are mostly
/// built on the machine that runs them, and a pull of a local tag would
/// only fail.)
const PULL_POLICY: PullPolicy = PullPolicy::IfNotPresent;

/// Leaves out of `spec` what equals its default.
pub fn canonical(spec: &mut PodSpec) {
    fn drop_if<T: PartialEq>(field: &mut Option<T>, default: &T) {
        if field.as_ref() == Some(default) {
            *field = None;
        }
    }
    // The deprecated spelling says the same as the current one.
    if spec.service_account.is_some() && spec.service_account_name.is_none() {
        spec.service_account_name = spec.service_account.take();
    } else if spec.service_account == spec.service_account_name {
        spec.service_account = None;
    }
    drop_if(&mut spec.service_account_name, &SERVICE_ACCOUNT.to_owned());
    drop_if(&mut spec.service_account, &SERVICE_ACCOUNT.to_owned());
    drop_if(&mut spec.enable_service_links, &true);
    drop_if(&mut spec.dns_policy, &DNS_POLICY.to_owned());
    drop_if(
        &mut spec.scheduler_name,
        &super::load::DEFAULT_SCHEDULER.to_owned(),
    );
    drop_if(&mut spec.security_context, &PodSecurityContext::default());
    for c in spec.containers.iter_mut().chain(&mut spec.init_containers) {
        drop_if(&mut c.image_pull_policy, &PULL_POLICY);
        drop_if(
            &mut c.termination_message_path,
            &TERMINATION_MESSAGE_PATH.to_owned(),
        );
        drop_if(
            &mut c.termination_message_policy,
            &TERMINATION_MESSAGE_POLICY.to_owned(),
        );
        drop_if(&mut c.security_context, &Default::default());
        for port in &mut c.ports {
            drop_if(&mut port.protocol, &PROTOCOL.to_owned());
        }
    }
}

/// Fills in the defaults of `spec`, as a cluster shows it; a pod's own
/// spec (`of_pod`) shows what admission adds to pods too.
pub fn shown(spec: &mut PodSpec, of_pod: bool) {
    spec.dns_policy.get_or_insert_with(|| DNS_POLICY.into());
    spec.scheduler_name
        .get_or_insert_with(|| super::load::DEFAULT_SCHEDULER.into());
    spec.security_context.get_or_insert_with(Default::default);
    if of_pod {
        spec.service_account_name
            .get_or_insert_with(|| SERVICE_ACCOUNT.into());
        spec.enable_service_links.get_or_insert(true);
    }
    // The deprecated spelling, kept equal to the current one.
    if let Some(account) = &spec.service_account_name {
        spec.service_account.get_or_insert_with(|| account.clone());
    }
    for c in spec.containers.iter_mut().chain(&mut spec.init_containers) {
        show_container(c);
    }
}

fn show_container(c: &mut Container) {
    c.image_pull_policy.get_or_insert(PULL_POLICY);
    c.termination_message_path
        .get_or_insert_with(|| TERMINATION_MESSAGE_PATH.into());
    c.termination_message_policy
        .get_or_insert_with(|| TERMINATION_MESSAGE_POLICY.into());
    for port in &mut c.ports {
        port.protocol.get_or_insert_with(|| PROTOCOL.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn shown_then_canonical_is_what_was_written() {
        let written = spec("containers: [{name: c, image: i, ports: [{containerPort: 80}]}]");
        let mut full = written.clone();
        shown(&mut full, true);
        assert_eq!(full.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(full.service_account_name.as_deref(), Some("default"));
        assert_eq!(full.containers[0].ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(
            full.containers[0].termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        let mut back = full;
        canonical(&mut back);
        assert_eq!(back, written);
    }

    #[test]
    fn a_value_other_than_the_default_stays() {
        let mut s = spec(
            "containers: [{name: c, image: i, imagePullPolicy: Always}]\n\
             dnsPolicy: Default\nserviceAccount: robot\n",
        );
        canonical(&mut s);
        assert_eq!(s.containers[0].image_pull_policy, Some(PullPolicy::Always));
        assert_eq!(s.dns_policy.as_deref(), Some("Default"));
        assert_eq!(s.service_account_name.as_deref(), Some("robot"));
        assert_eq!(s.service_account, None);
    }
}
