//! The OpenAPI document and the server's routes describe the same API: every native and
//! operations route is in the document, and the document has no route the server lacks.

use berth_api::{Surface, route_table};
use std::collections::BTreeSet;

const DOCUMENT: &str = include_str!("../openapi.json");
const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

#[test]
fn the_document_lists_exactly_the_routes_the_server_has() {
    let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let served: BTreeSet<String> = route_table()
        .into_iter()
        .filter(|r| matches!(r.surface, Surface::Native | Surface::Operations))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "openapi.json routes the server lacks: {unserved:?}"
    );
}

#[test]
fn every_operation_documents_its_responses_and_every_reference_resolves() {
    let document: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(*method) {
                assert!(
                    operation["responses"]
                        .as_object()
                        .is_some_and(|r| !r.is_empty()),
                    "{method} {path} has no responses"
                );
                assert!(
                    operation["operationId"].is_string(),
                    "{method} {path} has no operationId"
                );
            }
        }
    }
    let mut references = Vec::new();
    collect_references(&document, &mut references);
    assert!(references.len() > 100, "{} references", references.len());
    for reference in references {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not a local reference"));
        assert!(
            document.pointer(pointer).is_some(),
            "dangling reference {reference}"
        );
    }
}

/// Every `$ref` in the document, found by walking it (not by scanning its text).
fn collect_references(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", serde_json::Value::String(reference)) => found.push(reference.clone()),
                    _ => collect_references(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_references(item, found);
            }
        }
        _ => {}
    }
}
