//! The catalog import, as JSON and as YAML (anchors, aliases, deep nesting, huge numbers).
#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    harness::send("POST", "/v1/catalog/import", "application/json", body.to_vec());
    harness::send("POST", "/v1/catalog/import", "application/yaml", body.to_vec());
});
