//! Where the agent registers: berth's native API (`berth://host:port`, several for failover) or
//! service-registrar's key layout in etcd (`etcd://host:port`). Both answer the same questions:
//! what does this host own there, put a record, remove one, keep them alive, and clear them.
//!
//! Records are named by a target key (berth: `service/id`; etcd: the key path) and compared by
//! a fingerprint of what the target stores, so a resync rewrites only what differs.

mod berth;
#[cfg(feature = "etcd")]
mod etcd;

pub use berth::BerthTarget;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdLayout, EtcdTarget, PathElement};
/// TLS and credentials for the etcd target.
#[cfg(feature = "etcd")]
pub use etcd_client::ConnectOptions as EtcdConnectOptions;

use crate::container::Record;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target cannot be reached: retry later, nothing is lost.
    #[error("{0}")]
    Unreachable(String),
    /// The target refused this record: retrying the same record will not help.
    #[error("{0}")]
    Refused(String),
}

/// service-registrar's default key path (`/services/ENVIRONMENT/NAME/PORT/HOST_PORT/HOSTNAME`).
pub const DEFAULT_PATH: &str =
    "environment:ENVIRONMENT,environment:NAME,service:PORT,service:HOST_PORT,service:HOSTNAME";

/// What the target holds for this host: target key → fingerprint.
pub type Owned = BTreeMap<String, String>;

pub enum Target {
    Berth(BerthTarget),
    /// Boxed: the etcd client is large, and there is one target per agent.
    #[cfg(feature = "etcd")]
    Etcd(Box<EtcdTarget>),
}

impl Target {
    /// For logs: where records go.
    pub fn describe(&self) -> String {
        match self {
            Target::Berth(target) => target.describe(),
            #[cfg(feature = "etcd")]
            Target::Etcd(target) => target.describe(),
        }
    }

    pub fn key_of(&self, record: &Record) -> String {
        match self {
            Target::Berth(_) => berth::key_of(record),
            #[cfg(feature = "etcd")]
            Target::Etcd(target) => target.key_of(record),
        }
    }

    pub fn fingerprint(&self, record: &Record) -> String {
        match self {
            Target::Berth(_) => berth::fingerprint(record),
            #[cfg(feature = "etcd")]
            Target::Etcd(target) => target.fingerprint(record),
        }
    }

    /// Every record this host owns in the target.
    pub async fn owned(&self) -> Result<Owned, TargetError> {
        match self {
            Target::Berth(target) => target.owned().await,
            #[cfg(feature = "etcd")]
            Target::Etcd(target) => target.owned().await,
        }
    }

    pub async fn put(&self, record: &Record) -> Result<(), TargetError> {
        match self {
            Target::Berth(target) => target.put(record).await,
            #[cfg(feature = "etcd")]
            Target::Etcd(target) => target.put(record).await,
        }
    }

    pub async fn remove(&self, key: &str) -> Result<(), TargetError> {
        match self {
            Target::Berth(target) => target.remove(key).await,
            #[cfg(feature = "etcd")]
            Target::Etcd(target) => target.remove(key).await,
        }
    }

    /// Keeps the records alive; returns the keys the target lost (expired while it could not
    /// be reached), which must be put again.
    pub async fn renew(&self, records: &[(&String, &Record)]) -> Result<Vec<String>, TargetError> {
        match self {
            Target::Berth(target) => target.renew(records).await,
            #[cfg(feature = "etcd")]
            Target::Etcd(target) => target.renew(records).await,
        }
    }
}
