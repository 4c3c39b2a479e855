//! The one auth check every surface uses. Tokens live in the store (only a SHA-256 of each
//! secret), so every node of an etcd cluster knows a token the moment it is created, and forgets
//! it the moment it is revoked; the follower keeps them in memory, so checking a request is a
//! hash and a map lookup. A request is allowed when its token (or the anonymous rule) has a
//! grant that covers its action (`berth_domain::auth`).

use crate::error::{RegistryError, Result};
use crate::{Registry, keys};
use berth_domain::auth::{Action, Grant, Grants, Owner, TokenSpec};
use berth_domain::{Timestamp, ValidationErrors};
use berth_store::{Compare, EventKind, KeyValue, Store, Txn, TxnOp, WatchBatch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// What a request without a token may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Anonymous {
    /// Nothing: every request needs a token.
    #[default]
    None,
    /// Read everything (for old pollers that cannot send a header); writes need a token.
    Read,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub enabled: bool,
    pub anonymous: Anonymous,
    /// What a verified client certificate may do without a token (mTLS); empty: nothing
    /// more than an anonymous request. Its owner is the certificate's subject name.
    pub certificate_grants: Grants,
}

/// What a request presents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Credentials<'a> {
    #[default]
    None,
    /// A token's secret.
    Secret(&'a str),
    /// A client certificate the TLS handshake verified, by its subject name; a secret sent
    /// along takes precedence.
    Certificate {
        subject: &'a str,
        secret: Option<&'a str>,
    },
}

/// How many lookups of unknown tokens may wait for the store at once: a flood of made-up
/// tokens costs the store this many reads at most.
pub(crate) const UNKNOWN_TOKEN_LOOKUPS: usize = 4;

/// A token, as the registry knows it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's public id (what `berth token revoke` names).
    pub token_id: String,
    pub owner: Owner,
    pub grants: Grants,
    pub description: String,
    pub created_at: Timestamp,
}

/// Who makes a request, as the auth check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off: everything is allowed, and nothing a request registers is owned.
    Unchecked,
    /// No credentials; allowed what `[auth] anonymous` says.
    Anonymous,
    Token(Arc<Principal>),
    /// A client certificate standing in for a token (mTLS), with the configured grants.
    Certificate(Arc<Principal>),
}

impl Caller {
    /// The team whose instances this caller's registrations become.
    pub fn owner(&self) -> Option<&Owner> {
        match self {
            Caller::Token(principal) | Caller::Certificate(principal) => Some(&principal.owner),
            Caller::Unchecked | Caller::Anonymous => None,
        }
    }

    /// Whether this caller may change or remove what `owner` owns: the same team, an
    /// administrator, or anyone when nobody owns it (it is then claimed by the change), and
    /// everyone when auth is off.
    pub fn may_change(&self, owner: Option<&Owner>) -> bool {
        match (self, owner) {
            (Caller::Unchecked, _) | (_, None) => true,
            (Caller::Token(principal) | Caller::Certificate(principal), Some(owner)) => {
                &principal.owner == owner || principal.grants.is_admin()
            }
            (Caller::Anonymous, Some(_)) => false,
        }
    }
}

/// A secret's digest, the only form of a secret the store and the memory hold.
pub(crate) type Digest32 = [u8; 32];

pub(crate) fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Digest32> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[derive(Serialize, Deserialize)]
struct TokenRecord {
    owner: String,
    grants: Vec<String>,
    #[serde(default)]
    description: String,
    created_at_ms: u64,
    secret_sha256: String,
}

fn encode(principal: &Principal, secret: &Digest32) -> Vec<u8> {
    serde_json::to_vec(&TokenRecord {
        owner: principal.owner.to_string(),
        grants: principal.grants.texts(),
        description: principal.description.clone(),
        created_at_ms: principal.created_at.millis(),
        secret_sha256: hex(secret),
    })
    .expect("a token record always serializes")
}

fn decode(id: &str, bytes: &[u8]) -> std::result::Result<(Principal, Digest32), String> {
    let context = |e: &dyn std::fmt::Display| format!("token {id}: {e}");
    let record: TokenRecord = serde_json::from_slice(bytes).map_err(|e| context(&e))?;
    let spec = berth_domain::auth::TokenDraft {
        owner: Some(record.owner),
        grants: record.grants,
        description: Some(record.description),
    }
    .validate()
    .map_err(|e| context(&e))?;
    let digest = unhex(&record.secret_sha256).ok_or_else(|| context(&"a bad secret digest"))?;
    Ok((
        Principal {
            token_id: id.to_string(),
            owner: spec.owner,
            grants: spec.grants,
            description: spec.description,
            created_at: Timestamp::from_millis(record.created_at_ms),
        },
        digest,
    ))
}

/// Every token, in memory, kept in step with the store by the follower.
#[derive(Default)]
pub(crate) struct AuthView {
    state: RwLock<Tokens>,
    /// Moves with every change of the tokens, so a stream can end when its token goes.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Tokens {
    by_digest: HashMap<Digest32, Arc<Principal>>,
    by_id: BTreeMap<String, (Arc<Principal>, Digest32)>,
}

impl Tokens {
    fn remove(&mut self, id: &str) {
        if let Some((_, digest)) = self.by_id.remove(id) {
            self.by_digest.remove(&digest);
        }
    }

    /// Applies one record; one that does not decode is left out (and its error returned).
    fn apply(&mut self, kind: EventKind, kv: &KeyValue) -> std::result::Result<(), String> {
        let Some(id) = std::str::from_utf8(&kv.key)
            .ok()
            .and_then(|key| key.strip_prefix(keys::TOKENS))
        else {
            return Ok(());
        };
        self.remove(id);
        if kind == EventKind::Delete {
            return Ok(());
        }
        let (principal, digest) = decode(id, &kv.value)?;
        let principal = Arc::new(principal);
        self.by_digest.insert(digest, principal.clone());
        self.by_id.insert(id.to_string(), (principal, digest));
        Ok(())
    }
}

impl AuthView {
    /// Builds the view from a range of the auth prefix; the records that did not decode.
    pub fn load(kvs: &[KeyValue]) -> (Self, Vec<String>) {
        let view = AuthView::default();
        let failures = view.reload(kvs);
        (view, failures)
    }

    pub fn reload(&self, kvs: &[KeyValue]) -> Vec<String> {
        let mut fresh = Tokens::default();
        let failures = kvs
            .iter()
            .filter_map(|kv| fresh.apply(EventKind::Put, kv).err())
            .collect();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.changed.send_modify(|epoch| *epoch += 1);
        failures
    }

    pub fn apply(&self, batch: &WatchBatch) -> Vec<String> {
        let mut failures = Vec::new();
        let mut touched = false;
        {
            let mut tokens = self.state.write().unwrap_or_else(|e| e.into_inner());
            for event in &batch.events {
                if event.kv.key.starts_with(keys::AUTH.as_bytes()) {
                    failures.extend(tokens.apply(event.kind, &event.kv).err());
                    touched = true;
                }
            }
        }
        if touched {
            self.changed.send_modify(|epoch| *epoch += 1);
        }
        failures
    }

    fn by_digest(&self, digest: &Digest32) -> Option<Arc<Principal>> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_digest
            .get(digest)
            .cloned()
    }

    fn contains(&self, id: &str) -> bool {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .contains_key(id)
    }

    fn all(&self) -> Vec<Arc<Principal>> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .values()
            .map(|(principal, _)| principal.clone())
            .collect()
    }
}

/// A fresh token secret: 256 random bits, prefixed so that secret scanners find it.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("berth_{}", hex(&bytes))
}

/// A fresh public token id.
fn new_token_id() -> String {
    let bytes: [u8; 8] = rand::random();
    hex(&bytes)
}

/// The id of the token made from the operator's bootstrap file.
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap";

impl Registry {
    pub fn auth_enabled(&self) -> bool {
        self.inner.config.auth.enabled
    }

    /// Who presents `secret` (`None`: no credentials). `Unauthenticated` for a secret that is
    /// no token's.
    ///
    /// A token this node does not know yet may have just been created on another node: before
    /// refusing it, the node catches up with the store (one read on etcd), a few lookups at a
    /// time.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Caller> {
        let config = &self.inner.config.auth;
        if !config.enabled {
            return Ok(Caller::Unchecked);
        }
        let secret = match credentials {
            Credentials::None => return Ok(Caller::Anonymous),
            Credentials::Secret(secret)
            | Credentials::Certificate {
                secret: Some(secret),
                ..
            } => secret,
            Credentials::Certificate {
                subject,
                secret: None,
            } => return Ok(self.certificate_caller(subject)),
        };
        let digest = digest(secret);
        if let Some(principal) = self.inner.auth.by_digest(&digest) {
            return Ok(Caller::Token(principal));
        }
        let unknown =
            || RegistryError::Unauthenticated("the token is unknown or was revoked".into());
        let Ok(_lookup) = self.inner.unknown_token_lookups.try_acquire() else {
            return Err(unknown());
        };
        self.sync(crate::Consistency::Consistent).await?;
        self.inner
            .auth
            .by_digest(&digest)
            .map(Caller::Token)
            .ok_or_else(unknown)
    }

    /// A verified client certificate without a token: the configured grants, owned by its
    /// subject; with no grants configured, an anonymous caller.
    fn certificate_caller(&self, subject: &str) -> Caller {
        let grants = &self.inner.config.auth.certificate_grants;
        match Owner::parse("certificate subject", subject) {
            Ok(owner) if !grants.all().is_empty() => Caller::Certificate(Arc::new(Principal {
                token_id: format!("certificate:{subject}"),
                owner,
                grants: grants.clone(),
                description: "a client certificate".into(),
                created_at: Timestamp::from_millis(0),
            })),
            _ => Caller::Anonymous,
        }
    }

    /// Whether `caller` may do `action`: `Unauthenticated` when a token is needed and none was
    /// given, `Forbidden` when the token lacks the grant.
    pub fn authorize(&self, caller: &Caller, action: &Action<'_>) -> Result<()> {
        let grants = match caller {
            Caller::Unchecked => return Ok(()),
            Caller::Anonymous => {
                let anonymous = match self.inner.config.auth.anonymous {
                    Anonymous::None => Grants::default(),
                    Anonymous::Read => Grants::read_everything(),
                };
                if anonymous.allows(action) {
                    return Ok(());
                }
                return Err(RegistryError::Unauthenticated(format!(
                    "a token is required to {action} (send Authorization: Bearer <token>)"
                )));
            }
            Caller::Token(principal) | Caller::Certificate(principal) => &principal.grants,
        };
        if grants.allows(action) {
            Ok(())
        } else {
            Err(RegistryError::Forbidden(format!(
                "this token ({}) does not grant {action}",
                grants
            )))
        }
    }

    /// Authenticates and authorizes in one step: the one check every surface makes.
    pub async fn check(&self, credentials: Credentials<'_>, action: &Action<'_>) -> Result<Caller> {
        let caller = self.authenticate(credentials).await?;
        self.authorize(&caller, action)?;
        Ok(caller)
    }

    /// Resolves when `caller`'s token is revoked (never for other callers): a stream opened
    /// with a token ends with it.
    pub async fn revoked(&self, caller: &Caller) {
        let id = match caller {
            Caller::Token(principal) => principal.token_id.clone(),
            _ => return std::future::pending().await,
        };
        let mut changed = self.inner.auth.changed.subscribe();
        loop {
            if !self.inner.auth.contains(&id) {
                return;
            }
            if changed.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Every token (never their secrets).
    pub async fn tokens(&self) -> Result<Vec<Arc<Principal>>> {
        self.sync_local_writes().await?;
        Ok(self.inner.auth.all())
    }

    /// Creates a token and returns it with its secret, which is shown this once: only its
    /// digest is stored. The creator must hold every grant it hands out.
    pub async fn create_token(
        &self,
        spec: TokenSpec,
        by: &Caller,
    ) -> Result<(Arc<Principal>, String)> {
        if let Caller::Token(creator) | Caller::Certificate(creator) = by
            && let Some(grant) = spec
                .grants
                .all()
                .iter()
                .find(|g| !creator.grants.includes(g))
        {
            return Err(RegistryError::Forbidden(format!(
                "a token cannot hand out {grant}, which it does not hold"
            )));
        }
        let secret = new_secret();
        let principal = Principal {
            token_id: new_token_id(),
            owner: spec.owner,
            grants: spec.grants,
            description: spec.description,
            created_at: self.now(),
        };
        self.put_token(&principal, &digest(&secret)).await?;
        Ok((Arc::new(principal), secret))
    }

    /// Makes the operator's bootstrap secret an administrator's token, unless it already is
    /// one (on every start, whichever node gets there first).
    pub async fn ensure_bootstrap_token(&self, secret: &str) -> Result<()> {
        let secret = secret.trim();
        if secret.len() < 16 {
            return Err(ValidationErrors::single(
                "bootstrap_token_file",
                "the bootstrap token must be at least 16 characters (128 bits of randomness: \
                 `openssl rand -hex 32` makes one)",
            )
            .into());
        }
        if self.inner.auth.by_digest(&digest(secret)).is_some() {
            return Ok(());
        }
        let principal = Principal {
            token_id: BOOTSTRAP_TOKEN_ID.to_string(),
            owner: Owner::parse("owner", "admin").expect("a valid owner"),
            grants: Grants::new(vec![Grant::Admin]),
            description: "made from the bootstrap token file".into(),
            created_at: self.now(),
        };
        // A changed bootstrap file replaces the earlier bootstrap token.
        let key = keys::token_key(BOOTSTRAP_TOKEN_ID);
        let response = self
            .store()
            .txn(Txn::new().and_then(vec![TxnOp::put(
                key,
                encode(&principal, &digest(secret)),
                None,
            )]))
            .await?;
        self.written(response.revision).await
    }

    async fn put_token(&self, principal: &Principal, digest: &Digest32) -> Result<()> {
        let key = keys::token_key(&principal.token_id);
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when(vec![Compare::absent(key.clone())])
                    .and_then(vec![TxnOp::put(key, encode(principal, digest), None)]),
            )
            .await?;
        if !response.succeeded {
            return Err(RegistryError::conflict(
                "a token with this id exists; try again",
            ));
        }
        self.written(response.revision).await
    }

    /// Revokes a token: every node refuses it once its view has the deletion, and streams
    /// opened with it end.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        let key = keys::token_key(id);
        let response = self
            .store()
            .txn(
                Txn::new()
                    .when(vec![Compare::new(
                        key.clone(),
                        berth_store::CompareOp::Greater,
                        berth_store::CompareTarget::CreateRevision(berth_store::Revision(0)),
                    )])
                    .and_then(vec![TxnOp::delete(key)]),
            )
            .await?;
        if !response.succeeded {
            return Err(RegistryError::NotFound(format!(
                "token {id} does not exist"
            )));
        }
        self.written(response.revision).await
    }
}
