//! `berth serve`'s configuration file: whatever an operator writes is read into a
//! configuration or refused with a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|text: &[u8]| {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let env = BTreeMap::from([(
        "BERTH_CONFIG".to_string(),
        file.path().display().to_string(),
    )]);
    let _ = berth::config::resolve(&berth::settings::ServeArgs::default(), &env);
});
