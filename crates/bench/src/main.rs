//! `berth-bench`: berth's benchmarks. Each prints its figures next to the targets the issues
//! set; none of them is a test (timing is measured, never asserted).
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures real time against real processes"
)]

mod agent;
mod auth;
mod catalog;
mod dns;
mod feed;
mod hostile;
mod http;
mod report;
mod store;
mod xds;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "berth's benchmarks: figures compared with their targets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The store: durable puts (vs etcd), keepalives, watch latency
    Store {
        /// Seconds per throughput measurement
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// The catalog: allocations/s with 10,000 apps, start order of 10,000 apps
    Catalog {
        /// The berth binary to run (build it with `cargo build --release`)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
    },
    /// The Docker agent with the real engine: start → queryable, stop → offline (100 containers)
    Agent {
        /// The berth binary to run (build it with `cargo build --release`)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
    },
    /// The live feed and the legacy doors: lyft and bender against the native API, event
    /// fan-out to 1,000 streams, memory per stream, etcd watchers
    Feed {
        /// The berth binary to run (build it with `cargo build --release`)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Seconds per wrk run
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What auth costs: heartbeats/s and queries/s with auth off and on, side by side
    Auth {
        /// The berth binary to run (build it with `cargo build --release`)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Seconds per wrk run
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// DNS with dnsperf, side by side with dnsmasq serving the same records
    Dns {
        /// The berth binary to run (build it with `cargo build --release`)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Seconds per dnsperf run
        #[arg(long, default_value_t = 8)]
        seconds: u64,
    },
    /// Hostile clients: memory after blocking queries on millions of unknown names, heartbeats
    /// while 1,000 slow connections are held
    Hostile {
        /// The berth binary to run (build it with `cargo build --release`)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Seconds per wrk run of heartbeats (at most 7: slow connections are closed at 10 s)
        #[arg(long, default_value_t = 7)]
        seconds: u64,
        /// Blocking queries on distinct unknown names
        #[arg(long, default_value_t = 2_000_000)]
        queries: u64,
    },
    /// xDS: a registration reaching 1,000 ADS streams (100,000 instances), memory per stream,
    /// CPU per change, and a real Envoy applying changes
    Xds {
        /// The berth binary to run (build it with `cargo build --release`)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        #[arg(long, default_value_t = 1_000)]
        streams: usize,
        #[arg(long, default_value_t = 100_000)]
        instances: usize,
        #[arg(long, default_value_t = 100)]
        changes: usize,
    },
    /// The HTTP API with wrk, memory per instance, offline-event lateness
    Http {
        /// The berth binary to run (build it with `cargo build --release`)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Seconds per wrk run
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Store { seconds } => store::run(seconds).await,
        Command::Http { berth, seconds } => http::run(&berth, seconds).await,
        Command::Feed { berth, seconds } => feed::run(&berth, seconds).await,
        Command::Auth { berth, seconds } => auth::run(&berth, seconds).await,
        Command::Dns { berth, seconds } => dns::run(&berth, seconds).await,
        Command::Hostile {
            berth,
            seconds,
            queries,
        } => hostile::run(&berth, seconds, queries).await,
        Command::Catalog { berth } => catalog::run(&berth).await,
        Command::Agent { berth } => agent::run(&berth).await,
        Command::Xds {
            berth,
            streams,
            instances,
            changes,
        } => xds::run(&berth, streams, instances, changes).await,
    }
}
