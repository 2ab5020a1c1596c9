//! Resource quantities (`500m`, `64Mi`, `1e3`) as pods and limits give them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(quantity) = text.parse::<berth_spec::Quantity>() {
        let _ = quantity.to_bytes();
        let _ = quantity.millis();
        // What parses prints as the same quantity.
        let again: berth_spec::Quantity = quantity.to_string().parse().expect("round trip");
        assert_eq!(again, quantity, "{text:?}");
    }
});
