//! Placing pods on nodes, as kube-scheduler's default profile does: filter
//! the nodes where the pod's requests fit beside what is already bound
//! there, then score by LeastAllocated (most room left, averaged over cpu
//! and memory). A pod that fits nowhere gets the reason Kubernetes gives
//! (`0/2 nodes are available: 2 insufficient memory.`).
//!
//! One host runs every node; nodes are capacities to divide it by, so the
//! logic is the one a many-host berth would use.

use std::collections::BTreeMap;

use crate::spec::objects::PodSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// How many pods it runs at most (the kubelet's maxPods).
    pub max_pods: u64,
}

/// This machine's architecture as Kubernetes (and OCI) names it.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Kubernetes' default maxPods for a node.
pub const MAX_PODS: u64 = 110;

impl Node {
    /// The labels a kubelet gives its node, which `nodeSelector` and node
    /// affinity match.
    pub fn labels(&self) -> BTreeMap<String, String> {
        [
            ("kubernetes.io/hostname", self.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", arch()),
            ("node.kubernetes.io/instance-type", "berth"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// This machine: its CPUs and its memory.
    pub fn host() -> Node {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(1 << 30);
        Node {
            name: "berth".into(),
            cpu_millis: cpus * 1000,
            memory_bytes: memory,
            max_pods: MAX_PODS,
        }
    }
}

impl std::str::FromStr for Node {
    type Err = String;

    /// `NAME=CPU,MEMORY[,PODS]` in Kubernetes quantities: `small=2,4Gi`,
    /// `big=8,32Gi,250` (pods: at most 110 unless said).
    fn from_str(s: &str) -> Result<Node, String> {
        let usage = || {
            format!(
                "{s:?}: write a node as NAME=CPU,MEMORY[,PODS], e.g. small=2,4Gi or big=8,32Gi,250"
            )
        };
        let (name, capacity) = s.split_once('=').ok_or_else(usage)?;
        let mut parts = capacity.split(',');
        let (Some(cpu), Some(memory), pods, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(usage());
        };
        let max_pods = match pods {
            None => MAX_PODS,
            Some(pods) => pods
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{s:?}: {pods:?} is not a number of pods (1 or more)"))?,
        };
        let cpu: crate::spec::Quantity = cpu.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let memory: crate::spec::Quantity = memory.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !crate::spec::load::is_dns_subdomain(name) {
            return Err(format!("{s:?}: {name:?} is not a valid node name"));
        }
        Ok(Node {
            name: name.to_owned(),
            cpu_millis: u64::try_from(cpu.millis()).map_err(|_| usage())?,
            memory_bytes: memory.to_bytes().ok_or_else(usage)?,
            max_pods,
        })
    }
}

/// What a pod asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Pods: one for a pod, the count of those bound for a node.
    pub pods: u64,
}

impl std::ops::AddAssign for Requests {
    fn add_assign(&mut self, other: Requests) {
        self.cpu_millis += other.cpu_millis;
        self.memory_bytes += other.memory_bytes;
        self.pods += other.pods;
    }
}

/// What a pod needs at its peak, as Kubernetes counts it: its app
/// containers and sidecars together, or an init container with the
/// sidecars started before it, whichever is more. A container that sets
/// only a limit requests that much.
pub fn requests(spec: &PodSpec) -> Requests {
    let of = |c: &crate::spec::objects::Container| {
        let r = &c.resources;
        let cpu = r.requests.cpu.or(r.limits.cpu);
        let memory = r.requests.memory.or(r.limits.memory);
        Requests {
            cpu_millis: cpu.map_or(0, |q| u64::try_from(q.millis()).unwrap_or(u64::MAX)),
            memory_bytes: memory.and_then(|q| q.to_bytes()).unwrap_or(0),
            pods: 0,
        }
    };
    let mut sidecars = Requests::default();
    let mut peak = Requests::default();
    for c in &spec.init_containers {
        if c.is_sidecar() {
            sidecars += of(c);
        } else {
            let mut during = sidecars;
            during += of(c);
            peak = peak.max_each(during);
        }
    }
    let mut running = sidecars;
    for c in &spec.containers {
        running += of(c);
    }
    let mut total = peak.max_each(running);
    total.pods = 1;
    total
}

impl Requests {
    fn max_each(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
            pods: self.pods.max(other.pods),
        }
    }
}

/// The node for a pod asking `want`, given what each node already has
/// bound (`allocated`), or why none will do.
pub fn schedule(
    nodes: &[Node],
    allocated: &BTreeMap<String, Requests>,
    want: Requests,
) -> Result<String, String> {
    schedule_where(nodes, allocated, want, |_| true)
}

/// [`schedule`] for a pod: on the nodes its `nodeSelector` and required
/// node affinity allow.
pub fn schedule_pod(
    nodes: &[Node],
    allocated: &BTreeMap<String, Requests>,
    spec: &PodSpec,
) -> Result<String, String> {
    // Most pods name no placement: ten thousand of them need not build
    // every node's labels ten thousand times.
    if spec.node_selector.is_empty() && spec.affinity.is_none() {
        return schedule(nodes, allocated, requests(spec));
    }
    schedule_where(nodes, allocated, requests(spec), |node| {
        crate::spec::placement::fits(
            &node.name,
            &node.labels(),
            &spec.node_selector,
            spec.affinity.as_ref(),
        )
    })
}

fn schedule_where(
    nodes: &[Node],
    allocated: &BTreeMap<String, Requests>,
    want: Requests,
    allowed: impl Fn(&Node) -> bool,
) -> Result<String, String> {
    let mut short_cpu = 0;
    let mut short_memory = 0;
    let mut full = 0;
    let mut unmatched = 0;
    let mut best: Option<(f64, &Node)> = None;
    for node in nodes {
        if !allowed(node) {
            unmatched += 1;
            continue;
        }
        let used = allocated.get(&node.name).copied().unwrap_or_default();
        let cpu_left = node
            .cpu_millis
            .checked_sub(used.cpu_millis + want.cpu_millis);
        let memory_left = node
            .memory_bytes
            .checked_sub(used.memory_bytes + want.memory_bytes);
        if cpu_left.is_none() {
            short_cpu += 1;
        }
        if memory_left.is_none() {
            short_memory += 1;
        }
        let room = used.pods + want.pods <= node.max_pods;
        if !room {
            full += 1;
        }
        let (Some(cpu_left), Some(memory_left), true) = (cpu_left, memory_left, room) else {
            continue;
        };
        let share = |left: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                left as f64 / total as f64
            }
        };
        let score =
            (share(cpu_left, node.cpu_millis) + share(memory_left, node.memory_bytes)) / 2.0;
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, node));
        }
    }
    if let Some((_, node)) = best {
        return Ok(node.name.clone());
    }
    let mut reasons = Vec::new();
    if unmatched > 0 {
        // kube-scheduler's words.
        reasons.push(format!(
            "{unmatched} node(s) didn't match Pod's node affinity/selector"
        ));
    }
    if short_cpu > 0 {
        reasons.push(format!("{short_cpu} insufficient cpu"));
    }
    if short_memory > 0 {
        reasons.push(format!("{short_memory} insufficient memory"));
    }
    if full > 0 {
        // kube-scheduler's words for a node at its maxPods.
        reasons.push(format!("{full} Too many pods"));
    }
    if reasons.is_empty() {
        reasons.push("no nodes".into());
    }
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        reasons.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> Node {
        s.parse().unwrap()
    }

    #[test]
    fn a_pod_asks_for_its_peak_init_containers_and_sidecars_included() {
        let spec: PodSpec = yaml_serde::from_str(
            "initContainers:\n\
             - {name: proxy, image: p, restartPolicy: Always, resources: {requests: {cpu: 100m, memory: 64Mi}}}\n\
             - {name: migrate, image: m, resources: {requests: {cpu: '2', memory: 32Mi}}}\n\
             containers:\n\
             - {name: app, image: a, resources: {requests: {cpu: 500m, memory: 256Mi}}}\n",
        )
        .unwrap();
        // CPU peaks while migrate runs beside the proxy; memory once the
        // app runs beside it.
        assert_eq!(
            requests(&spec),
            Requests {
                cpu_millis: 2100,
                memory_bytes: 320 << 20,
                pods: 1
            }
        );
    }

    #[test]
    fn least_allocated_spreads_pods_over_nodes_that_fit() {
        let nodes = [node("a=2,4Gi"), node("b=4,8Gi")];
        let mut allocated = BTreeMap::new();
        let pod = Requests {
            cpu_millis: 1000,
            memory_bytes: 2 << 30,
            pods: 1,
        };
        // The node with the most room left wins; a tie goes to the first.
        let mut placed = Vec::new();
        let err = loop {
            match schedule(&nodes, &allocated, pod) {
                Ok(chosen) => {
                    *allocated.entry(chosen.clone()).or_default() += pod;
                    placed.push(chosen);
                }
                Err(e) => break e,
            }
        };
        assert_eq!(placed, ["b", "a", "b", "b", "a", "b"], "a holds 2, b 4");
        assert_eq!(
            err,
            "0/2 nodes are available: 2 insufficient cpu, 2 insufficient memory."
        );
    }

    #[test]
    fn a_pod_bigger_than_every_node_is_refused_with_the_reason() {
        let nodes = [node("small=1,1Gi")];
        let want = Requests {
            cpu_millis: 100,
            memory_bytes: 2 << 30,
            pods: 1,
        };
        assert_eq!(
            schedule(&nodes, &BTreeMap::new(), want).unwrap_err(),
            "0/1 nodes are available: 1 insufficient memory."
        );
        assert!("x".parse::<Node>().is_err());
        assert!("n=1,lots".parse::<Node>().is_err());
        assert_eq!(node("n=500m,1Mi").cpu_millis, 500);
    }

    #[test]
    fn a_node_takes_at_most_its_max_pods() {
        let nodes = [node("tiny=4,4Gi,2")];
        assert_eq!(node("n=1,1Gi").max_pods, MAX_PODS);
        assert!("n=1,1Gi,0".parse::<Node>().is_err());
        assert!("n=1,1Gi,many".parse::<Node>().is_err());
        let pod = Requests {
            pods: 1,
            ..Requests::default()
        };
        let mut allocated = BTreeMap::new();
        for _ in 0..2 {
            let chosen = schedule(&nodes, &allocated, pod).unwrap();
            *allocated.entry(chosen).or_default() += pod;
        }
        assert_eq!(
            schedule(&nodes, &allocated, pod).unwrap_err(),
            "0/1 nodes are available: 1 Too many pods."
        );
    }

    #[test]
    fn a_pod_goes_only_where_its_node_selector_and_affinity_allow() {
        let nodes = [node("a=2,4Gi"), node("b=2,4Gi")];
        let spec = |yaml: &str| -> PodSpec { yaml_serde::from_str(yaml).unwrap() };
        let on_b =
            spec("containers: [{name: c, image: i}]\nnodeSelector: {kubernetes.io/hostname: b}\n");
        assert_eq!(schedule_pod(&nodes, &BTreeMap::new(), &on_b).unwrap(), "b");
        let arm = spec(&format!(
            "containers: [{{name: c, image: i}}]\naffinity: {{nodeAffinity: \
             {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: \
             [{{matchExpressions: [{{key: kubernetes.io/arch, operator: NotIn, values: [{}]}}]}}]}}}}}}\n",
            arch()
        ));
        assert_eq!(
            schedule_pod(&nodes, &BTreeMap::new(), &arm).unwrap_err(),
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
    }
}
