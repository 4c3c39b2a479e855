//! End-to-end tests: the real `berth` binary (built once, in the test profile) against real
//! stores: redb on disk and a real etcd. One test binary, so it is linked once.

mod agent;
mod catalog;
mod cli;
mod cluster;
mod compat_bender;
mod compat_flow;
mod compat_lyft;
mod instances;
mod process;
mod support;
