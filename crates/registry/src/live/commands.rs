//! Writes to live instances: register (or renew, or update), heartbeat, deregister. Each is a
//! compare-and-swap transaction on the instance's key, retried when another writer got there
//! first, and the instance's record always sits on its own lease.

use crate::auth::Caller;
use crate::error::{RegistryError, Result};
use crate::live::records::{StoredInstance, decode_instance, encode_instance};
use crate::live::view::LiveInstance;
use crate::{Registry, keys};
use berth_domain::{Instance, InstanceId, InstanceSpec, ServiceName, Timestamp};
use berth_store::{Compare, LeaseId, Revision, Store, StoreError, Txn, TxnOp, get};
use std::sync::Arc;
use std::time::Duration;

/// How many times a write is retried when the record changed under it.
const ATTEMPTS: usize = 8;

/// A read-only look at an instance with the bookkeeping a response shows.
#[derive(Clone, Copy, Debug)]
pub struct InstanceRef<'a> {
    pub instance: &'a Instance,
    pub revision_index: Revision,
    pub last_heartbeat: Timestamp,
    pub expires_at: Timestamp,
}

impl LiveInstance {
    pub fn as_instance_ref(&self) -> InstanceRef<'_> {
        InstanceRef {
            instance: &self.instance,
            revision_index: self.revision_index,
            last_heartbeat: self.last_heartbeat(),
            expires_at: self.expires_at(),
        }
    }
}

/// The outcome of a registration.
#[derive(Clone, Debug)]
pub struct Registered {
    pub instance: Instance,
    pub revision_index: Revision,
    pub last_heartbeat: Timestamp,
    pub lease_ttl: Duration,
    pub outcome: RegistrationOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// A new instance.
    Created,
    /// An existing instance whose fields changed.
    Updated,
    /// The same instance registered again: its lease was renewed and nothing was written.
    Renewed,
}

impl Registered {
    pub fn as_instance_ref(&self) -> InstanceRef<'_> {
        InstanceRef {
            instance: &self.instance,
            revision_index: self.revision_index,
            last_heartbeat: self.last_heartbeat,
            expires_at: self.last_heartbeat.plus(self.lease_ttl),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatAck {
    pub expires_at: Timestamp,
    pub ttl: Duration,
}

/// Refuses a change of `instance` that `by` may not make (another team's).
fn may_change(by: &Caller, instance: &Instance) -> Result<()> {
    if by.may_change(instance.owner.as_ref()) {
        return Ok(());
    }
    let spec = &instance.spec;
    Err(RegistryError::Forbidden(format!(
        "instance {} of {} belongs to team {}: only its tokens (or an administrator's) may change \
         or remove it",
        spec.id(),
        spec.service(),
        instance.owner.as_ref().map_or("-", |o| o.as_str())
    )))
}

/// Who owns an instance after `by` changed it: its team still, or `by`'s team when it had none
/// (the first change claims it).
fn owner_after_change(by: &Caller, instance: &Instance) -> Option<berth_domain::auth::Owner> {
    instance.owner.clone().or_else(|| by.owner().cloned())
}

impl Registry {
    /// Registers `spec`, or renews it when the same instance is already registered with the
    /// same fields, or updates it when its fields changed. A new instance belongs to `by`'s
    /// team; changing an existing one needs a token of its team (or an administrator's); one
    /// that nobody owns is claimed by the first change (see [`Caller::may_change`]).
    pub async fn register(&self, spec: InstanceSpec, by: &Caller) -> Result<Registered> {
        let (service, id) = (spec.service().clone(), spec.id().clone());
        self.register_with(&service, &id, |_| Ok(spec.clone()), by)
            .await
    }

    /// Like [`Registry::register`], with the spec built from the instance as it is now (or
    /// `None`): for surfaces whose registrations merge into what is there (lyft's tags).
    pub async fn register_with(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        build: impl Fn(Option<&Instance>) -> Result<InstanceSpec>,
        by: &Caller,
    ) -> Result<Registered> {
        if let Some(renewed) = self.renew_from_view(service, id, &build, by).await? {
            self.inner.counters.registrations[2].increment(1);
            return Ok(renewed);
        }
        let store = self.store();
        let key = keys::instance_key(service.as_str(), id.as_str());
        for _ in 0..ATTEMPTS {
            let current = get(store, key.clone()).await?;
            let stored = match &current {
                Some(kv) => Some(decode_instance(kv).map_err(RegistryError::Internal)?),
                None => None,
            };
            let spec = build(stored.as_ref().map(|s| &s.instance))?;
            if spec.service() != service || spec.id() != id {
                return Err(RegistryError::conflict(
                    "a registration cannot move an instance to another service or id",
                ));
            }
            if let Some(stored) = &stored
                && stored.instance.spec.origin() != spec.origin()
            {
                let (was, now) = (stored.instance.spec.origin(), spec.origin());
                return Err(RegistryError::conflict(format!(
                    "instance {id} of {service} was registered through the {} API; a {} \
                     registration cannot change it (deregister it first, or keep registering it \
                     through the {} API)",
                    was.as_str(),
                    now.as_str(),
                    was.as_str()
                )));
            }
            let now = self.now();
            let attempt = match (&current, stored) {
                (None, _) => {
                    self.within_instance_caps(service)?;
                    self.create(&key, spec, now, by).await?
                }
                (Some(kv), Some(stored)) => {
                    self.replace(&key, kv.mod_revision, stored, spec, now, by)
                        .await?
                }
                (Some(_), None) => unreachable!("decoded above"),
            };
            if let Some(registered) = attempt {
                let [created, updated, renewed] = &self.inner.counters.registrations;
                match registered.outcome {
                    RegistrationOutcome::Created => created.increment(1),
                    RegistrationOutcome::Updated => updated.increment(1),
                    RegistrationOutcome::Renewed => renewed.increment(1),
                }
                return Ok(registered);
            }
        }
        Err(RegistryError::conflict(format!(
            "instance {id} of {service} kept changing during the registration; try again"
        )))
    }

    /// The common registration, a client registering again exactly as it is (bender's and
    /// lyft's way of renewing): answered from this node's view with one keepalive, without
    /// reading or writing the store or encoding a record. `None` when it is not that case
    /// (new, changed, another TTL, or a lease that ran out): the store decides then.
    async fn renew_from_view(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        build: &impl Fn(Option<&Instance>) -> Result<InstanceSpec>,
        by: &Caller,
    ) -> Result<Option<Registered>> {
        self.sync_local_writes().await?;
        let Some(live) = self.view_instance(service, id) else {
            return Ok(None);
        };
        let spec = build(Some(&live.instance))?;
        // A registration that claims an unowned instance is a change, not a renewal.
        if spec != live.instance.spec
            || owner_after_change(by, &live.instance) != live.instance.owner
        {
            return Ok(None);
        }
        match self.store().lease_keepalive(live.lease).await {
            Ok(ttl) => {
                let now = self.now();
                self.heard_from(&live, now);
                Ok(Some(Registered {
                    instance: live.instance.clone(),
                    revision_index: live.revision_index,
                    last_heartbeat: now,
                    lease_ttl: ttl,
                    outcome: RegistrationOutcome::Renewed,
                }))
            }
            Err(StoreError::LeaseNotFound(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Refuses a new instance past the caps on instances per service and in total.
    fn within_instance_caps(&self, service: &ServiceName) -> Result<()> {
        let caps = self.inner.config.caps;
        let view = &self.inner.instances;
        if view.service_len(service) >= caps.instances_per_service {
            return Err(RegistryError::LimitReached(format!(
                "service {service} has {} live instances, the most one service may have \
                 (instances.max_per_service)",
                caps.instances_per_service
            )));
        }
        if view.instance_count() >= caps.instances {
            return Err(RegistryError::LimitReached(format!(
                "the registry holds {} live instances, the most it takes (instances.max_total)",
                caps.instances
            )));
        }
        Ok(())
    }

    /// A new instance on a new lease. `None` when someone created it first.
    async fn create(
        &self,
        key: &bytes::Bytes,
        spec: InstanceSpec,
        now: Timestamp,
        by: &Caller,
    ) -> Result<Option<Registered>> {
        let store = self.store();
        let grant = store.lease_grant(spec.ttl()).await?;
        let instance = Instance {
            spec,
            registered_at: now,
            owner: by.owner().cloned(),
        };
        let txn = Txn::new()
            .when(vec![Compare::absent(key.clone())])
            .and_then(vec![TxnOp::put(
                key.clone(),
                encode_instance(&instance, grant.ttl),
                Some(grant.id),
            )]);
        let response = match store.txn(txn).await {
            Ok(response) => response,
            Err(error) => {
                // A write of unknown outcome may have committed, holding the lease: revoking it
                // would delete an instance a retry (here or on another node) acknowledges.
                if !matches!(error, StoreError::OutcomeUnknown(_)) {
                    self.revoke_in_background(grant.id);
                }
                return Err(error.into());
            }
        };
        if !response.succeeded {
            self.revoke_in_background(grant.id);
            return Ok(None);
        }
        self.written(response.revision).await?;
        Ok(Some(Registered {
            instance,
            revision_index: response.revision,
            last_heartbeat: now,
            lease_ttl: grant.ttl,
            outcome: RegistrationOutcome::Created,
        }))
    }

    /// Renews or rewrites an existing instance. `None` when the record changed meanwhile.
    async fn replace(
        &self,
        key: &bytes::Bytes,
        seen: Revision,
        stored: StoredInstance,
        spec: InstanceSpec,
        now: Timestamp,
        by: &Caller,
    ) -> Result<Option<Registered>> {
        let store = self.store();
        let unchanged = stored.instance.spec == spec
            && owner_after_change(by, &stored.instance) == stored.instance.owner;
        if !unchanged {
            may_change(by, &stored.instance)?;
        }
        // The same lease serves as long as it is alive and has the asked TTL.
        let mut live_lease = None;
        if let Some(lease) = stored
            .lease
            .filter(|_| stored.instance.spec.ttl() == spec.ttl())
        {
            match store.lease_keepalive(lease).await {
                Ok(ttl) => live_lease = Some((lease, ttl)),
                Err(StoreError::LeaseNotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        if unchanged && let Some((_, ttl)) = live_lease {
            if let Some(live) = self.view_instance(spec.service(), spec.id()) {
                self.heard_from(&live, now);
            }
            return Ok(Some(Registered {
                instance: stored.instance,
                revision_index: stored.revision_index,
                last_heartbeat: now,
                lease_ttl: ttl,
                outcome: RegistrationOutcome::Renewed,
            }));
        }
        let (lease, lease_ttl, fresh) = match live_lease {
            Some((lease, ttl)) => (lease, ttl, false),
            None => {
                let grant = store.lease_grant(spec.ttl()).await?;
                (grant.id, grant.ttl, true)
            }
        };
        let instance = Instance {
            spec,
            registered_at: stored.instance.registered_at,
            owner: owner_after_change(by, &stored.instance),
        };
        let txn = Txn::new()
            .when(vec![Compare::unchanged_since(key.clone(), seen)])
            .and_then(vec![TxnOp::put(
                key.clone(),
                encode_instance(&instance, lease_ttl),
                Some(lease),
            )]);
        let response = match store.txn(txn).await {
            Ok(response) => response,
            // The live lease ran out between its keepalive and this write (bender's 500 ms
            // TTLs under commit latency): try again, with a fresh lease (defect M14).
            Err(StoreError::LeaseNotFound(_)) if !fresh => return Ok(None),
            Err(error) => {
                if fresh && !matches!(error, StoreError::OutcomeUnknown(_)) {
                    self.revoke_in_background(lease);
                }
                return Err(error.into());
            }
        };
        if !response.succeeded {
            if fresh {
                self.revoke_in_background(lease);
            }
            return Ok(None);
        }
        if fresh && let Some(old) = stored.lease {
            // The record moved to the new lease; the old one holds nothing any more.
            self.revoke_in_background(old);
        }
        self.written(response.revision).await?;
        Ok(Some(Registered {
            instance,
            revision_index: response.revision,
            last_heartbeat: now,
            lease_ttl,
            outcome: if unchanged {
                // Same fields, but its lease had run out: it is back on a new one.
                RegistrationOutcome::Renewed
            } else {
                RegistrationOutcome::Updated
            },
        }))
    }

    /// Renews an instance's lease. `NotFound` when it is not registered or already expired:
    /// the client must register again.
    pub async fn heartbeat(&self, service: &ServiceName, id: &InstanceId) -> Result<HeartbeatAck> {
        self.sync_local_writes().await?;
        let not_found = || {
            RegistryError::NotFound(format!(
                "instance {id} of service {service} is not registered (or has expired); register it again"
            ))
        };
        let live: Arc<LiveInstance> = match self.view_instance(service, id) {
            Some(live) => live,
            None => {
                // Only a view as new as the store may say an instance is not there: it may have
                // been registered through another node a moment ago, or this node may be cut
                // off from the quorum (then this fails with 503, and the client moves on).
                self.sync(crate::Consistency::Consistent).await?;
                self.view_instance(service, id).ok_or_else(not_found)?
            }
        };
        match self.store().lease_keepalive(live.lease).await {
            Ok(ttl) => {
                let now = self.now();
                self.heard_from(&live, now);
                self.inner.counters.heartbeats.increment(1);
                Ok(HeartbeatAck {
                    expires_at: now.plus(ttl),
                    ttl,
                })
            }
            Err(StoreError::LeaseNotFound(_)) => Err(not_found()),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes an instance now (`by` must be of its team, or an administrator). Its `offline`
    /// event says `deregistered`.
    pub async fn deregister(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        by: &Caller,
    ) -> Result<()> {
        let key = keys::instance_key(service.as_str(), id.as_str());
        let removed = self
            .remove_records(
                || async {
                    match get(self.store(), key.clone()).await? {
                        Some(kv) => {
                            let stored = decode_instance(&kv).map_err(RegistryError::Internal)?;
                            Ok(vec![(kv, stored)])
                        }
                        None => Ok(Vec::new()),
                    }
                },
                by,
            )
            .await?;
        if removed == 0 {
            return Err(RegistryError::NotFound(format!(
                "instance {id} of service {service} is not registered"
            )));
        }
        Ok(())
    }

    /// Removes every instance of `service` that `select` picks, in one transaction (all or
    /// none), and tells how many. Their `offline` events say `deregistered`.
    pub async fn deregister_where(
        &self,
        service: &ServiceName,
        select: impl Fn(&InstanceSpec) -> bool,
        by: &Caller,
    ) -> Result<usize> {
        self.remove_records(
            || async {
                let records = self.stored_instances(service).await?;
                Ok(records
                    .into_iter()
                    .filter(|(_, stored)| select(&stored.instance.spec))
                    .collect())
            },
            by,
        )
        .await
    }

    /// Changes every instance of `service` that `select` picks with `edit`, in one transaction
    /// (all or none), and tells how many it picked (those `edit` left as they were included).
    /// Each keeps its lease: a change of fields is not a heartbeat, so it never keeps a dead
    /// instance alive.
    pub async fn update_where(
        &self,
        service: &ServiceName,
        select: impl Fn(&InstanceSpec) -> bool,
        edit: impl Fn(&Instance) -> Result<InstanceSpec>,
        by: &Caller,
    ) -> Result<usize> {
        for attempt in 0..ATTEMPTS {
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            let mut picked = 0;
            for (kv, stored) in self.stored_instances(service).await? {
                if !select(&stored.instance.spec) {
                    continue;
                }
                picked += 1;
                let spec = edit(&stored.instance)?;
                if spec == stored.instance.spec {
                    continue;
                }
                if spec.service() != service || spec.id() != stored.instance.spec.id() {
                    return Err(RegistryError::conflict(
                        "an update cannot move an instance to another service or id",
                    ));
                }
                may_change(by, &stored.instance)?;
                let instance = Instance {
                    spec,
                    registered_at: stored.instance.registered_at,
                    owner: owner_after_change(by, &stored.instance),
                };
                compares.push(Compare::unchanged_since(kv.key.clone(), kv.mod_revision));
                ops.push(TxnOp::put(
                    kv.key.clone(),
                    encode_instance(&instance, stored.lease_ttl),
                    kv.lease,
                ));
            }
            if ops.is_empty() {
                return Ok(picked);
            }
            match self
                .store()
                .txn(Txn::new().when(compares).and_then(ops))
                .await
            {
                Ok(response) if response.succeeded => {
                    self.written(response.revision).await?;
                    return Ok(picked);
                }
                Ok(_) => {}
                // One of them expired a moment ago: its deletion is on its way; plan again
                // without it.
                Err(StoreError::LeaseNotFound(_)) => self.pause_for_expiry(attempt).await,
                Err(error) => return Err(error.into()),
            }
        }
        Err(RegistryError::conflict(format!(
            "the instances of {service} kept changing during the update; try again"
        )))
    }

    /// Every instance record of `service` as the store holds it now.
    async fn stored_instances(
        &self,
        service: &ServiceName,
    ) -> Result<Vec<(berth_store::KeyValue, StoredInstance)>> {
        let response = self
            .store()
            .range_all(
                keys::instances_of(Some(service.as_str())).into(),
                crate::PAGE,
                None,
            )
            .await?;
        response
            .kvs
            .into_iter()
            .map(|kv| {
                let stored = decode_instance(&kv).map_err(RegistryError::Internal)?;
                Ok((kv, stored))
            })
            .collect()
    }

    /// Deletes the records `read` finds, in one transaction with a deregistration marker on
    /// each one's lease (so the marker goes when the lease is revoked right after, or expires
    /// should this node die first), again and again while they change meanwhile.
    async fn remove_records<F>(&self, read: impl Fn() -> F, by: &Caller) -> Result<usize>
    where
        F: std::future::Future<Output = Result<Vec<(berth_store::KeyValue, StoredInstance)>>>,
    {
        let mut with_markers = true;
        for _ in 0..ATTEMPTS {
            let found = read().await?;
            if found.is_empty() {
                return Ok(0);
            }
            for (_, stored) in &found {
                may_change(by, &stored.instance)?;
            }
            let records: Vec<berth_store::KeyValue> = found.into_iter().map(|(kv, _)| kv).collect();
            let mut compares = Vec::with_capacity(records.len());
            let mut ops = Vec::with_capacity(records.len() * 2);
            for kv in &records {
                compares.push(Compare::unchanged_since(kv.key.clone(), kv.mod_revision));
                ops.push(TxnOp::delete(kv.key.clone()));
                if let Some(lease) = kv.lease.filter(|_| with_markers)
                    && let Some((service, id)) = keys::parse_instance_key(&kv.key)
                {
                    ops.push(TxnOp::put(
                        keys::deregistered_key(service, id),
                        "deregistered",
                        Some(lease),
                    ));
                }
            }
            match self
                .store()
                .txn(Txn::new().when(compares).and_then(ops))
                .await
            {
                Ok(response) if response.succeeded => {
                    for lease in records.iter().filter_map(|kv| kv.lease) {
                        self.revoke_in_background(lease);
                    }
                    self.written(response.revision).await?;
                    self.inner
                        .counters
                        .deregistrations
                        .increment(records.len() as u64);
                    return Ok(records.len());
                }
                Ok(_) => {}
                // A lease ran out a moment ago: delete without markers on dead leases (an
                // expiry is what it was).
                Err(StoreError::LeaseNotFound(_)) => with_markers = false,
                Err(error) => return Err(error.into()),
            }
        }
        Err(RegistryError::conflict(
            "the instances kept changing during the deregistration; try again",
        ))
    }

    /// A lease the store refused is past its deadline: its keys are deleted within the
    /// store's expiry pass. Waits a little longer each attempt.
    async fn pause_for_expiry(&self, attempt: usize) {
        tokio::time::sleep(Duration::from_millis(25 * (attempt as u64 + 1))).await;
    }

    fn revoke_in_background(&self, lease: LeaseId) {
        let store = self.store().clone();
        tokio::spawn(async move {
            if let Err(error) = store.lease_revoke(lease).await
                && !matches!(error, StoreError::LeaseNotFound(_))
            {
                tracing::debug!(%error, %lease, "revoking an unused lease failed; it will expire");
            }
        });
    }
}
