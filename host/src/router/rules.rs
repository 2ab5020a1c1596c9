//! Ingress rules as the router matches them: by host (an exact name before
//! a `*.` wildcard, which matches one label), then by path (an Exact path
//! before the longest Prefix, which matches whole path elements), as the
//! Kubernetes Ingress spec says. Rules without a host and the default
//! backends answer what no host's rule does.

use std::collections::HashMap;

use crate::spec::objects::{Ingress, IngressBackend, PathType};

/// Where a matched request goes: a service port, and the ingress that sent
/// it there (for the error when the service is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    pub port: BackendPort,
    /// `NAMESPACE/NAME` of the ingress.
    pub ingress: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone)]
struct PathRule {
    /// Without a trailing slash (but `/` itself), for Prefix matching.
    path: String,
    exact: bool,
    backend: Backend,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        if self.exact {
            return path == self.path;
        }
        self.path == "/"
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The rules of every ingress berth serves, compiled for lookups.
#[derive(Debug, Default)]
pub struct IngressRules {
    exact: HashMap<String, Vec<PathRule>>,
    /// `(".example.com", paths)`: hosts one label under the domain.
    wildcard: Vec<(String, Vec<PathRule>)>,
    any_host: Vec<PathRule>,
    default: Option<Backend>,
}

fn backend(namespace: &str, ingress: &str, b: &IngressBackend) -> Option<Backend> {
    let service = b.service.as_ref()?;
    let port = match (&service.port.name, service.port.number) {
        (Some(name), _) => BackendPort::Name(name.clone()),
        (None, Some(n)) => BackendPort::Number(n),
        (None, None) => return None,
    };
    Some(Backend {
        namespace: namespace.to_owned(),
        service: service.name.clone(),
        port,
        ingress: format!("{namespace}/{ingress}"),
    })
}

/// Exact paths first, then prefixes longest first; among equals, the one
/// given first (ingresses in the order given) wins.
fn order(paths: &mut [PathRule]) {
    paths.sort_by(|a, b| {
        b.exact
            .cmp(&a.exact)
            .then_with(|| b.path.len().cmp(&a.path.len()))
    });
}

fn first_match<'a>(paths: &'a [PathRule], path: &str) -> Option<&'a Backend> {
    paths.iter().find(|p| p.matches(path)).map(|p| &p.backend)
}

impl IngressRules {
    /// The rules of `ingresses` berth serves (those of its class or none).
    pub fn new<'a>(ingresses: impl IntoIterator<Item = &'a Ingress>) -> IngressRules {
        let mut rules = IngressRules::default();
        for ingress in ingresses.into_iter().filter(|i| i.served()) {
            let ns = ingress.metadata.namespace.as_deref().unwrap_or("default");
            let name = &ingress.metadata.name;
            if rules.default.is_none() {
                rules.default = ingress
                    .spec
                    .default_backend
                    .as_ref()
                    .and_then(|b| backend(ns, name, b));
            }
            for rule in &ingress.spec.rules {
                let paths: Vec<PathRule> = rule
                    .http
                    .iter()
                    .flat_map(|h| &h.paths)
                    .filter_map(|p| {
                        let text = p.path.as_deref().unwrap_or("/");
                        // An exact path as written; a prefix without its
                        // trailing slash (`/foo/` matches `/foo` too).
                        let path = if p.path_type == PathType::Exact {
                            text.to_owned()
                        } else {
                            match text.trim_end_matches('/') {
                                "" => "/".to_owned(),
                                trimmed => trimmed.to_owned(),
                            }
                        };
                        Some(PathRule {
                            path,
                            exact: p.path_type == PathType::Exact,
                            backend: backend(ns, name, &p.backend)?,
                        })
                    })
                    .collect();
                let host = rule.host.as_deref().map(str::to_ascii_lowercase);
                match host.as_deref() {
                    None => rules.any_host.extend(paths),
                    Some(h) => match h.strip_prefix('*') {
                        Some(suffix) => {
                            match rules.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                                Some((_, list)) => list.extend(paths),
                                None => rules.wildcard.push((suffix.to_owned(), paths)),
                            }
                        }
                        None => rules.exact.entry(h.to_owned()).or_default().extend(paths),
                    },
                }
            }
        }
        rules.exact.values_mut().for_each(|p| order(p));
        rules.wildcard.iter_mut().for_each(|(_, p)| order(p));
        order(&mut rules.any_host);
        rules
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.wildcard.is_empty()
            && self.any_host.is_empty()
            && self.default.is_none()
    }

    /// The backend a rule for `host` (lowercase, without its port) sends
    /// `path` to: `None` when no rule names the host, `Some(None)` when one
    /// does but none of its paths match (the default backend's, then).
    pub fn by_host(&self, host: &str, path: &str) -> Option<Option<&Backend>> {
        if let Some(paths) = self.exact.get(host) {
            return Some(first_match(paths, path));
        }
        let (label, domain) = host.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        let suffix = format!(".{domain}");
        self.wildcard
            .iter()
            .find(|(s, _)| *s == suffix)
            .map(|(_, paths)| first_match(paths, path))
    }

    /// What no host's rule answers: a host-less rule's path, else the
    /// default backend.
    pub fn fallback(&self, path: &str) -> Option<&Backend> {
        first_match(&self.any_host, path).or(self.default.as_ref())
    }

    /// The default backend, for a host whose rules matched no path.
    pub fn default_backend(&self) -> Option<&Backend> {
        self.default.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> IngressRules {
        let loaded = crate::spec::parse_str(yaml, "ing.yaml").unwrap();
        let ingresses: Vec<Ingress> = loaded
            .into_iter()
            .map(|l| match l.object {
                crate::spec::Object::Ingress(i) => *i,
                _ => panic!("not an ingress"),
            })
            .collect();
        IngressRules::new(&ingresses)
    }

    const SHOP: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: front, port: {number: 80}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
      - {path: /api/health, pathType: Exact, backend: {service: {name: health, port: {number: 8080}}}}
  - host: "*.tenants.example"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: tenant, port: {number: 80}}}}
  - http:
      paths:
      - {path: /static/, pathType: Prefix, backend: {service: {name: files, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other}
spec:
  ingressClassName: nginx
  rules:
  - host: other.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nginx, port: {number: 80}}}}
"#;

    fn service(found: Option<Option<&Backend>>) -> Option<&str> {
        found.flatten().map(|b| b.service.as_str())
    }

    #[test]
    fn hosts_then_paths_pick_the_backend_as_kubernetes_says() {
        let r = rules(SHOP);
        assert_eq!(service(r.by_host("shop.example", "/")), Some("front"));
        assert_eq!(service(r.by_host("shop.example", "/cart")), Some("front"));
        assert_eq!(service(r.by_host("shop.example", "/api")), Some("api"));
        assert_eq!(
            service(r.by_host("shop.example", "/api/items")),
            Some("api")
        );
        // By whole path elements: /apix is not under /api.
        assert_eq!(service(r.by_host("shop.example", "/apix")), Some("front"));
        assert_eq!(
            service(r.by_host("shop.example", "/api/health")),
            Some("health")
        );
        assert_eq!(
            service(r.by_host("shop.example", "/api/health/x")),
            Some("api")
        );
        let named = r.by_host("shop.example", "/api").flatten().unwrap();
        assert_eq!(named.port, BackendPort::Name("http".into()));
        // A wildcard matches one label, not the domain itself or two.
        assert_eq!(
            service(r.by_host("a.tenants.example", "/x")),
            Some("tenant")
        );
        assert_eq!(r.by_host("tenants.example", "/"), None);
        assert_eq!(r.by_host("a.b.tenants.example", "/"), None);
        // Other hosts: host-less rules, then the default backend.
        assert_eq!(r.by_host("elsewhere.example", "/"), None);
        assert_eq!(
            r.fallback("/static/app.js").map(|b| b.service.as_str()),
            Some("files")
        );
        assert_eq!(
            r.fallback("/static").map(|b| b.service.as_str()),
            Some("files")
        );
        assert_eq!(
            r.fallback("/").map(|b| b.service.as_str()),
            Some("fallback")
        );
        // Another class's ingress is not berth's to serve.
        assert_eq!(r.by_host("other.example", "/"), None);
    }
}
