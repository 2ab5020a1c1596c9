//! Image references as `berth pull`, `berth run` and pods name them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(reference) = text.parse::<berth_registry::Reference>() {
        // What parses prints as something that parses to the same.
        let again: berth_registry::Reference = reference.to_string().parse().expect("round trip");
        assert_eq!(again.to_string(), reference.to_string());
    }
});
