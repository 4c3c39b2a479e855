//! End-to-end tests: the real `berth` binary (built once, in the test profile) against real
//! stores: redb on disk and a real etcd. One test binary, so it is linked once.
#![allow(
    clippy::disallowed_methods,
    reason = "end-to-end tests time real processes and clear the caller's BERTH_* variables for them"
)]

mod agent;
mod auth;
mod caches;
mod catalog;
mod chaos;
mod cli;
mod cluster;
mod compat_bender;
mod compat_flow;
mod compat_lyft;
mod dns;
mod fake_docker;
mod first_contact;
mod hostile;
mod instances;
mod metrics;
mod process;
mod prometheus;
mod schema;
mod support;
mod tls;
mod xds;
