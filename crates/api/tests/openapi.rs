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
    let text = DOCUMENT;
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
    for reference in text.split("\"$ref\": \"#/").skip(1) {
        let pointer = reference.split('"').next().unwrap();
        assert!(
            document.pointer(&format!("/{pointer}")).is_some(),
            "dangling reference #/{pointer}"
        );
    }
}
