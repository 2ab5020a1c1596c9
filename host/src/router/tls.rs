//! The ingress's certificates: chosen per connection by the name the
//! client asks for (SNI), from the `kubernetes.io/tls` Secrets its
//! Ingresses' `spec.tls` names, and swapped whole when those change, so a
//! replaced Secret is served from the next handshake on.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Certificates by the host names they serve (`*.example.com` for a
/// wildcard), and the one for names no entry has, if any.
#[derive(Debug, Default, Clone)]
pub struct CertificateSet {
    pub by_host: HashMap<String, Arc<CertifiedKey>>,
    pub fallback: Option<Arc<CertifiedKey>>,
}

/// The live set, read by every handshake.
#[derive(Debug, Default)]
pub struct Certificates(ArcSwap<CertificateSet>);

impl Certificates {
    pub fn replace(&self, set: CertificateSet) {
        self.0.store(Arc::new(set));
    }

    fn find(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.0.load();
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return set.fallback.clone();
        };
        set.by_host
            .get(&name)
            .or_else(|| {
                let (_, domain) = name.split_once('.')?;
                set.by_host.get(&format!("*.{domain}"))
            })
            .or(set.fallback.as_ref())
            .cloned()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name())
    }
}

/// A certificate chain and key from a `kubernetes.io/tls` Secret's
/// `tls.crt` and `tls.key` (PEM), or what is wrong with them.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("tls.key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("tls.crt and tls.key do not belong together: {e}"))?;
    Ok(Arc::new(certified))
}

/// The TLS configuration of a listener serving `certificates`.
pub fn server_config(certificates: Arc<Certificates>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_no_client_auth()
    .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(names: &[&str]) -> Arc<CertifiedKey> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    #[test]
    fn a_name_finds_its_certificate_then_a_wildcard_then_the_fallback() {
        let shop = key_for(&["shop.example"]);
        let tenants = key_for(&["*.tenants.example"]);
        let any = key_for(&["fallback.example"]);
        let certificates = Certificates::default();
        certificates.replace(CertificateSet {
            by_host: [
                ("shop.example".to_owned(), shop.clone()),
                ("*.tenants.example".to_owned(), tenants.clone()),
            ]
            .into(),
            fallback: None,
        });
        let found = |name: &str| certificates.find(Some(name));
        assert!(Arc::ptr_eq(&found("shop.example").unwrap(), &shop));
        assert!(Arc::ptr_eq(&found("Shop.Example").unwrap(), &shop));
        assert!(Arc::ptr_eq(&found("a.tenants.example").unwrap(), &tenants));
        assert!(found("a.b.tenants.example").is_none());
        assert!(found("other.example").is_none());
        certificates.replace(CertificateSet {
            by_host: HashMap::new(),
            fallback: Some(any.clone()),
        });
        assert!(Arc::ptr_eq(&found("shop.example").unwrap(), &any));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = rcgen::KeyPair::generate().unwrap();
        let b = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .self_signed(&a)
            .unwrap();
        let e = certified_key(cert.pem().as_bytes(), b.serialize_pem().as_bytes()).unwrap_err();
        assert!(e.contains("do not belong together"), "{e}");
        assert!(certified_key(b"", b"").unwrap_err().contains("tls.crt"));
    }
}
