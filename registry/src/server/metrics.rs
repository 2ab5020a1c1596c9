//! What the registry counts for `/metrics`: requests by method and status
//! class, blob bytes in (uploads) and out (downloads), blobs pushed, and
//! at each scrape the blobs the store holds and their size. The caller
//! registers them in its own Prometheus registry ([`Metrics::register`]).

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    pub(crate) received: Counter,
    pub(crate) sent: Counter,
    pub(crate) pushed: Counter,
}

/// The registry's methods; any other is `OTHER`.
const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    pub(crate) fn request(&self, method: &http::Method, status: http::StatusCode) {
        let method = METHODS
            .iter()
            .find(|m| **m == method.as_str())
            .copied()
            .unwrap_or("OTHER");
        let class = usize::from(status.as_u16() / 100).clamp(1, CLASSES.len()) - 1;
        self.requests
            .get_or_create(&RequestLabels {
                method,
                code: CLASSES[class],
            })
            .inc();
    }

    /// Registers these, and the store under `root`, in `registry`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry, root: PathBuf) {
        registry.register(
            "berth_registry_requests",
            "Requests to the registry, by method and status class",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "berth_registry_blob_received",
            "Blob bytes received in uploads",
            Unit::Bytes,
            self.received.clone(),
        );
        registry.register_with_unit(
            "berth_registry_blob_sent",
            "Blob bytes sent in downloads",
            Unit::Bytes,
            self.sent.clone(),
        );
        registry.register(
            "berth_registry_blobs_pushed",
            "Blob uploads completed (their digest checked and the blob stored)",
            self.pushed.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { root }));
    }
}

/// The content store's blobs, counted at each scrape.
#[derive(Debug)]
struct StoreCollector {
    root: PathBuf,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (mut count, mut bytes) = (0u64, 0u64);
        for algorithm in crate::names::ALGORITHMS {
            let Ok(entries) = std::fs::read_dir(self.root.join("blobs").join(algorithm)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(meta) = entry.metadata()
                    && meta.is_file()
                {
                    count += 1;
                    bytes += meta.len();
                }
            }
        }
        let blobs = ConstGauge::new(count as i64);
        blobs.encode(encoder.encode_descriptor(
            "berth_registry_blobs",
            "Blobs in the registry's store",
            None,
            blobs.metric_type(),
        )?)?;
        let size = ConstGauge::new(bytes as i64);
        size.encode(encoder.encode_descriptor(
            "berth_registry_blob_size",
            "Bytes the registry's blobs take",
            Some(&Unit::Bytes),
            size.metric_type(),
        )?)
    }
}
