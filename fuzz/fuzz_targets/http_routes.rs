//! Every route of the route table (native, lyft, bender, flow) with made-up path segments,
//! query strings, content types and bodies: lyft's forms and tags, flow's form bodies and ids,
//! bender's paths, the native JSON bodies.
#![no_main]

#[path = "harness.rs"]
mod harness;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    route: u8,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    content_type: u8,
    body: Vec<u8>,
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let routes = berth_api::route_table();
    let route = &routes[input.route as usize % routes.len()];
    if route.path == "/v1/events" {
        return; // a stream: it never ends
    }
    let mut segments = input.segments.iter();
    let mut uri = String::new();
    for part in route.path.split('/').skip(1) {
        uri.push('/');
        if part.starts_with('{') {
            uri.push_str(&encode(segments.next().map_or("x", String::as_str)));
        } else {
            uri.push_str(part);
        }
    }
    if !input.query.is_empty() {
        let query: Vec<String> = input
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        uri.push('?');
        uri.push_str(&query.join("&"));
    }
    let content_type = [
        "application/json",
        "application/x-www-form-urlencoded",
        "application/yaml",
        "text/plain",
    ][input.content_type as usize % 4];
    harness::send(route.method.as_str(), &uri, content_type, input.body);
});
