//! Choosing a backend at run time: `--store embedded` or `--store etcd://host:port[,…]`, and
//! one type that forwards the contract to whichever was chosen.

use crate::embedded::{EmbeddedOptions, EmbeddedStore, OpenError};
use crate::{
    LeaseGrant, LeaseId, LeaseStatus, RangeRequest, RangeResponse, Result, Revision, Store,
    StoreKind, StoreStatus, Txn, TxnResponse, WatchStream,
};
use bytes::Bytes;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Where the data lives, as given on the command line or in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    Embedded,
    Etcd { endpoints: Vec<String> },
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        if text == "embedded" {
            return Ok(StoreLocation::Embedded);
        }
        let Some(rest) = text.strip_prefix("etcd://") else {
            return Err(format!(
                "`{text}` is not a store: use `embedded` or `etcd://host:port[,host:port…]`"
            ));
        };
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(format!("`{text}` names no etcd endpoint"));
        }
        for endpoint in &endpoints {
            let port = endpoint.rsplit_once(':').map(|(_, port)| port);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(format!(
                    "etcd endpoint `{endpoint}` needs a host and a port, e.g. 127.0.0.1:2379"
                ));
            }
        }
        Ok(StoreLocation::Etcd { endpoints })
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Embedded => f.write_str("embedded"),
            StoreLocation::Etcd { endpoints } => write!(f, "etcd://{}", endpoints.join(",")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    #[error(transparent)]
    Embedded(#[from] OpenError),
    #[error("{0}")]
    Etcd(String),
    #[error("this berth was built without etcd support (cargo feature `etcd`)")]
    EtcdNotBuiltIn,
}

/// The store chosen at run time.
#[derive(Clone)]
pub enum AnyStore {
    Embedded(EmbeddedStore),
    #[cfg(feature = "etcd")]
    Etcd(crate::etcd::EtcdStore),
}

/// How berth proves itself to an etcd with TLS or authentication on, and checks etcd (the
/// flags of etcd they answer: `--trusted-ca-file`, `--client-cert-auth`, `auth enable`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdSecurity {
    /// PEM of the authorities that signed etcd's certificate: TLS to etcd when given.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of berth's client certificate and key, for an etcd with `--client-cert-auth`.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// An etcd user and password, for an etcd with authentication enabled.
    pub user: Option<(String, String)>,
}

pub async fn open_store(
    location: &StoreLocation,
    embedded: EmbeddedOptions,
    etcd: &EtcdSecurity,
) -> std::result::Result<AnyStore, OpenStoreError> {
    match location {
        StoreLocation::Embedded => Ok(AnyStore::Embedded(EmbeddedStore::open(embedded).await?)),
        #[cfg(feature = "etcd")]
        StoreLocation::Etcd { endpoints } => Ok(AnyStore::Etcd(
            crate::etcd::EtcdStore::connect(endpoints, etcd)
                .await
                .map_err(|e| OpenStoreError::Etcd(e.to_string()))?,
        )),
        #[cfg(not(feature = "etcd"))]
        StoreLocation::Etcd { .. } => Err({
            let _ = etcd;
            OpenStoreError::EtcdNotBuiltIn
        }),
    }
}

impl AnyStore {
    /// Resolves with the cause when the store can no longer write and the process should
    /// exit to be restarted (the embedded store's disk failed). Never, on etcd: a node there
    /// keeps trying, and etcd itself reports its health.
    pub async fn failed(&self) -> String {
        match self {
            AnyStore::Embedded(store) => store.failed().await,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd(_) => std::future::pending().await,
        }
    }

    /// How recently the store's quorum answered (always current for the embedded store).
    pub fn contact(&self) -> crate::StoreContact {
        match self {
            AnyStore::Embedded(_) => crate::StoreContact::default(),
            #[cfg(feature = "etcd")]
            AnyStore::Etcd(store) => store.contact(),
        }
    }

    /// Flushes what the backend keeps in memory (the embedded store's lease checkpoint) and
    /// stops its background work.
    pub async fn close(&self) -> Result<()> {
        match self {
            AnyStore::Embedded(store) => store.close().await,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd(store) => {
                store.close();
                Ok(())
            }
        }
    }
}

macro_rules! forward {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Embedded($store) => $call,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd($store) => $call,
        }
    };
}

impl Store for AnyStore {
    fn kind(&self) -> StoreKind {
        forward!(self, store => store.kind())
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        forward!(self, store => store.range(request).await)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        forward!(self, store => store.txn(txn).await)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        forward!(self, store => store.lease_grant(ttl).await)
    }

    async fn lease_keepalive(&self, id: LeaseId) -> Result<Duration> {
        forward!(self, store => store.lease_keepalive(id).await)
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        forward!(self, store => store.lease_revoke(id).await)
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseStatus> {
        forward!(self, store => store.lease_time_to_live(id).await)
    }

    async fn watch(&self, prefix: Bytes, start_revision: Option<Revision>) -> Result<WatchStream> {
        forward!(self, store => store.watch(prefix, start_revision).await)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        forward!(self, store => store.compact(revision).await)
    }

    async fn status(&self) -> Result<StoreStatus> {
        forward!(self, store => store.status().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_locations() {
        assert_eq!("embedded".parse(), Ok(StoreLocation::Embedded));
        assert_eq!(
            "etcd://127.0.0.1:2379,10.0.0.2:2379".parse(),
            Ok(StoreLocation::Etcd {
                endpoints: vec!["127.0.0.1:2379".into(), "10.0.0.2:2379".into()]
            })
        );
        assert!("etcd://".parse::<StoreLocation>().is_err());
        assert!("etcd://localhost".parse::<StoreLocation>().is_err());
        assert!("redis://x:1".parse::<StoreLocation>().is_err());
    }
}
