//! Names in a Linux pod: the kubelet gives each pod an `/etc/hosts` of its
//! own (as Kubernetes' kubelet does) that also names every Service by its
//! virtual IP, the way cluster DNS would: `<svc>` and `<svc>.<ns>` from the
//! pod's namespace, `<svc>.<ns>.svc[.cluster.local]` from any. The file is
//! rewritten in place (a bind mount pins its inode) as Services come and
//! go. A headless Service's ready pods each have an address of their own in
//! the service network (see `Table::pod_addresses`), named as cluster DNS
//! names them (`<pod>.<svc>`…), and the Service's name is each of theirs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::table::Table;

/// The `/etc/hosts` of pod `pod` in `namespace`, as things are now.
fn hosts_file(table: &Table, namespace: &str, pod: &str) -> String {
    let mut out = String::from(
        "# Written by berth: this pod's name, and each Service's by its virtual IP.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    let _ = writeln!(out, "127.0.1.1\t{pod}");
    let mut services = BTreeMap::new();
    for route in table.routes() {
        if let Some(ip) = route.spec.virtual_ip() {
            services.insert((route.key.namespace.clone(), route.key.name.clone()), ip);
        }
    }
    for ((ns, name), ip) in services {
        let qualified = format!("{name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local");
        if ns == namespace {
            let _ = writeln!(out, "{ip}\t{name} {qualified}");
        } else {
            let _ = writeln!(out, "{ip}\t{qualified}");
        }
    }
    // A headless Service's pods by their own addresses, as cluster DNS
    // names a StatefulSet's: `web-0.web`, and the Service's name for each.
    let mut pods = table.pod_addresses();
    pods.sort_by_key(|p| p.ip);
    for address in pods {
        let (ns, service, pod) = (
            &address.route.key.namespace,
            &address.route.key.name,
            &address.pod,
        );
        let names = format!(
            "{pod}.{service}.{ns} {pod}.{service}.{ns}.svc {pod}.{service}.{ns}.svc.cluster.local \
             {service}.{ns} {service}.{ns}.svc {service}.{ns}.svc.cluster.local"
        );
        if ns == namespace {
            let _ = writeln!(out, "{}\t{pod}.{service} {names} {service}", address.ip);
        } else {
            let _ = writeln!(out, "{}\t{names}", address.ip);
        }
    }
    out
}

/// Makes the file at `hosts` the `/etc/hosts` of pod `pod` in `namespace`
/// as things are now (see [`hosts_file`]), written in place.
pub fn write_hosts(
    hosts: &std::path::Path,
    table: &Table,
    namespace: &str,
    pod: &str,
) -> std::io::Result<()> {
    rewrite_in_place(hosts, &hosts_file(table, namespace, pod))
}

/// Writes `text` over the file at `path` in place (the same inode, which a
/// container's bind mount holds), if it says something else now.
pub fn rewrite_in_place(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if std::fs::read_to_string(path).is_ok_and(|now| now == text) {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}
