//! Kubernetes manifests as `berth apply` and the API read them: YAML
//! streams, and JSON objects of every kind berth stores.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(loaded) = berth_spec::parse_str(text, "fuzz.yaml") {
        for object in loaded {
            // What was accepted is written out and read back the same.
            let value = object.object.to_value();
            let again = berth_spec::Object::from_value(object.object.kind(), value.clone());
            assert!(again.is_ok(), "{value}");
        }
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        for kind in berth_spec::Kind::ALL {
            let _ = berth_spec::Object::from_value(kind, value.clone());
        }
    }
});
