//! The registry's instance lifecycle on the embedded store with a hand-driven lease clock:
//! register, renew, update, heartbeat, expire, deregister, blocking queries and the event
//! stream, without sleeping through a TTL.

use berth_domain::{
    InstanceDefaults, InstanceDraft, InstanceId, InstanceSpec, OfflineReason, ServiceName,
};
use berth_registry::auth::Caller;
use berth_registry::{
    Consistency, EventItem, EventSubscription, InstanceEventKind, RegistrationOutcome, Registry,
    RegistryConfig, RegistryError, SystemWallClock,
};
use berth_store::embedded::{EmbeddedOptions, EmbeddedStore};
use berth_store::{AnyStore, ManualClock, Revision, Store};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    registry: Registry,
    store: EmbeddedStore,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let store =
        EmbeddedStore::open(EmbeddedOptions::new(dir.path()).with_clock(Arc::new(clock.clone())))
            .await
            .unwrap();
    let registry = Registry::start(
        AnyStore::Embedded(store.clone()),
        RegistryConfig::default(),
        Arc::new(SystemWallClock),
    )
    .await
    .unwrap();
    Fixture {
        registry,
        store,
        clock,
        _dir: dir,
    }
}

fn spec(service: &str, address: &str, port: i64, ttl_ms: i64) -> InstanceSpec {
    InstanceDraft {
        address: Some(address.into()),
        port: Some(port),
        ttl_ms: Some(ttl_ms),
        ..InstanceDraft::default()
    }
    .validate(service, None, &InstanceDefaults::default())
    .unwrap()
}

fn name(service: &str) -> ServiceName {
    ServiceName::parse("service", service).unwrap()
}

fn id(text: &str) -> InstanceId {
    InstanceId::parse("id", text).unwrap()
}

async fn next_events(
    subscription: &mut EventSubscription,
) -> (Revision, Vec<(InstanceEventKind, String)>) {
    match tokio::time::timeout(WAIT, subscription.next()).await {
        Ok(Some(EventItem::Batch(batch))) => (
            batch.revision(),
            batch
                .events()
                .map(|e| (e.kind, e.instance.instance.spec.id().to_string()))
                .collect(),
        ),
        other => panic!("expected an event batch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_heartbeat_expire() {
    let f = fixture().await;
    let mut events = f.registry.subscribe(None, None).await;
    let registered = f
        .registry
        .register(spec("web", "10.0.0.1", 80, 5_000), &Caller::Unchecked)
        .await
        .unwrap();
    assert_eq!(registered.outcome, RegistrationOutcome::Created);
    let (_, online) = next_events(&mut events).await;
    assert_eq!(
        online,
        vec![(InstanceEventKind::Online, "10.0.0.1:80".into())]
    );

    let view = f
        .registry
        .service(&name("web"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(view.instances.len(), 1);
    assert_eq!(view.index, registered.revision_index);

    // Heartbeats keep it past several TTLs.
    for _ in 0..5 {
        f.clock.advance(Duration::from_secs(4));
        let ack = f
            .registry
            .heartbeat(&name("web"), &id("10.0.0.1:80"))
            .await
            .unwrap();
        assert_eq!(ack.ttl, Duration::from_secs(5));
    }
    assert_eq!(
        f.registry
            .service(&name("web"), Consistency::Local)
            .await
            .unwrap()
            .instances
            .len(),
        1
    );

    // Silence: it expires, with an offline event saying so.
    f.clock.advance(Duration::from_millis(5_001));
    let (_, offline) = next_events(&mut events).await;
    assert_eq!(
        offline,
        vec![(
            InstanceEventKind::Offline(OfflineReason::Expired),
            "10.0.0.1:80".into()
        )]
    );
    assert!(
        f.registry
            .service(&name("web"), Consistency::Local)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    assert!(matches!(
        f.registry.heartbeat(&name("web"), &id("10.0.0.1:80")).await,
        Err(RegistryError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_registration_renews_without_a_write_and_changes_update() {
    let f = fixture().await;
    let first = f
        .registry
        .register(spec("api", "10.0.0.2", 81, 10_000), &Caller::Unchecked)
        .await
        .unwrap();
    let revision = f.store.status().await.unwrap().revision;
    let mut events = f.registry.subscribe(None, None).await;

    let again = f
        .registry
        .register(spec("api", "10.0.0.2", 81, 10_000), &Caller::Unchecked)
        .await
        .unwrap();
    assert_eq!(again.outcome, RegistrationOutcome::Renewed);
    assert_eq!(again.revision_index, first.revision_index);
    assert_eq!(
        f.store.status().await.unwrap().revision,
        revision,
        "a renewal wrote"
    );

    let changed = InstanceDraft {
        address: Some("10.0.0.2".into()),
        port: Some(81),
        ttl_ms: Some(10_000),
        weight: Some(7),
        tags: vec!["blue".into()],
        ..InstanceDraft::default()
    }
    .validate("api", None, &InstanceDefaults::default())
    .unwrap();
    let updated = f
        .registry
        .register(changed, &Caller::Unchecked)
        .await
        .unwrap();
    assert_eq!(updated.outcome, RegistrationOutcome::Updated);
    assert_eq!(updated.instance.registered_at, first.instance.registered_at);
    let (_, batch) = next_events(&mut events).await;
    assert_eq!(
        batch,
        vec![(InstanceEventKind::Updated, "10.0.0.2:81".into())]
    );

    // A new TTL moves the instance to a new lease, still as an update.
    let longer = spec("api", "10.0.0.2", 81, 60_000);
    assert_eq!(
        f.registry
            .register(longer, &Caller::Unchecked)
            .await
            .unwrap()
            .outcome,
        RegistrationOutcome::Updated
    );
    f.clock.advance(Duration::from_secs(30));
    let view = f
        .registry
        .service(&name("api"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(view.instances.len(), 1, "the new lease's TTL applies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistration_is_told_apart_from_expiry() {
    let f = fixture().await;
    f.registry
        .register(spec("db", "10.0.0.3", 5432, 30_000), &Caller::Unchecked)
        .await
        .unwrap();
    let mut events = f.registry.subscribe(Some(name("db")), None).await;
    f.registry
        .deregister(&name("db"), &id("10.0.0.3:5432"), &Caller::Unchecked)
        .await
        .unwrap();
    let (_, batch) = next_events(&mut events).await;
    assert_eq!(
        batch,
        vec![(
            InstanceEventKind::Offline(OfflineReason::Deregistered),
            "10.0.0.3:5432".into()
        )]
    );
    assert!(matches!(
        f.registry
            .deregister(&name("db"), &id("10.0.0.3:5432"), &Caller::Unchecked)
            .await,
        Err(RegistryError::NotFound(_))
    ));
    // The marker's lease is revoked: nothing of the instance is left in the store.
    assert!(berth_testkit::wait_until(WAIT, || f.store.stats().leases == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ports_per_address_are_several_instances() {
    let f = fixture().await;
    for port in [8080, 8081, 8082] {
        f.registry
            .register(spec("multi", "10.0.0.9", port, 30_000), &Caller::Unchecked)
            .await
            .unwrap();
    }
    let view = f
        .registry
        .service(&name("multi"), Consistency::Local)
        .await
        .unwrap();
    let ids: Vec<String> = view
        .instances
        .iter()
        .map(|i| i.instance.spec.id().to_string())
        .collect();
    assert_eq!(ids, vec!["10.0.0.9:8080", "10.0.0.9:8081", "10.0.0.9:8082"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_query_wakes_on_change_and_times_out_without_one() {
    let f = fixture().await;
    let first = f
        .registry
        .register(spec("blk", "10.0.1.1", 80, 30_000), &Caller::Unchecked)
        .await
        .unwrap();
    let index = first.revision_index;

    let quiet = f
        .registry
        .wait_for_service(&name("blk"), index, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        quiet.index, index,
        "no change: the same index after the wait"
    );

    let registry = f.registry.clone();
    let waiter = tokio::spawn(async move {
        registry
            .wait_for_service(&name("blk"), index, Duration::from_secs(30))
            .await
    });
    // Another service's change does not wake it...
    f.registry
        .register(spec("other", "10.0.1.2", 80, 30_000), &Caller::Unchecked)
        .await
        .unwrap();
    // ...this one does.
    let second = f
        .registry
        .register(spec("blk", "10.0.1.3", 80, 30_000), &Caller::Unchecked)
        .await
        .unwrap();
    let woken = tokio::time::timeout(WAIT, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(woken.index, second.revision_index);
    assert_eq!(woken.instances.len(), 2);
}

/// The live feed keeps recent history in memory: a subscriber resumes from it, in order,
/// even once the store compacted that history away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_without_loss_even_after_the_store_compacted() {
    let f = fixture().await;
    let mut revisions = Vec::new();
    for port in 1..=5 {
        revisions.push(
            f.registry
                .register(spec("res", "10.0.2.1", port, 30_000), &Caller::Unchecked)
                .await
                .unwrap()
                .revision_index,
        );
    }
    f.store.compact(revisions[3]).await.unwrap();
    let mut resumed = f.registry.subscribe(None, Some(revisions[1])).await;
    for expected in &revisions[2..] {
        let (revision, events) = next_events(&mut resumed).await;
        assert_eq!(revision, *expected);
        assert_eq!(events[0].0, InstanceEventKind::Online);
    }
    let later = f
        .registry
        .register(spec("res", "10.0.2.1", 6, 30_000), &Caller::Unchecked)
        .await
        .unwrap();
    let (revision, _) = next_events(&mut resumed).await;
    assert_eq!(revision, later.revision_index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_registrations_all_land() {
    let f = fixture().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let registry = f.registry.clone();
        tasks.push(tokio::spawn(async move {
            registry
                .register(
                    spec(
                        "crowd",
                        &format!("10.1.{}.{}", i / 250, i % 250 + 1),
                        9000,
                        30_000,
                    ),
                    &Caller::Unchecked,
                )
                .await
        }));
    }
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap().outcome,
            RegistrationOutcome::Created
        );
    }
    let view = f
        .registry
        .service(&name("crowd"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(view.instances.len(), 200);
    assert_eq!(f.store.stats().leases, 200);
}

/// Changes and removals of several instances are one command each: one transaction, one
/// revision, all or nothing. A change of fields is not a heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instances_change_and_go_in_one_command() {
    let f = fixture().await;
    for port in [80, 81, 82] {
        f.registry
            .register(spec("bulk", "10.0.0.9", port, 10_000), &Caller::Unchecked)
            .await
            .unwrap();
    }
    f.registry
        .register(spec("bulk", "10.0.0.10", 80, 10_000), &Caller::Unchecked)
        .await
        .unwrap();
    let mut events = f.registry.subscribe(Some(name("bulk")), None).await;
    let on_first_address = |spec: &InstanceSpec| spec.address().to_string() == "10.0.0.9";

    f.clock.advance(Duration::from_secs(6));
    let picked = f
        .registry
        .update_where(
            &name("bulk"),
            on_first_address,
            |current| {
                let mut draft = InstanceDraft::from(&current.spec);
                draft.weight = Some(9);
                Ok(draft.validate(
                    "bulk",
                    Some(current.spec.id().as_str()),
                    &InstanceDefaults::default(),
                )?)
            },
            &Caller::Unchecked,
        )
        .await
        .unwrap();
    assert_eq!(picked, 3);
    let (revision, updated) = next_events(&mut events).await;
    assert_eq!(updated.len(), 3, "three updates at revision {revision}");
    assert!(
        updated
            .iter()
            .all(|(kind, _)| *kind == InstanceEventKind::Updated)
    );

    // The update renewed nothing: 6 s + 5 s is past the 10 s TTL of every one.
    f.clock.advance(Duration::from_secs(5));
    let mut expired = Vec::new();
    while expired.len() < 4 {
        expired.extend(next_events(&mut events).await.1);
    }
    assert!(
        expired
            .iter()
            .all(|(kind, _)| *kind == InstanceEventKind::Offline(OfflineReason::Expired))
    );

    for port in [80, 81] {
        f.registry
            .register(spec("bulk", "10.0.0.9", port, 10_000), &Caller::Unchecked)
            .await
            .unwrap();
    }
    let (_, online) = next_events(&mut events).await;
    let (_, more) = next_events(&mut events).await;
    assert_eq!(online.len() + more.len(), 2);
    let removed = f
        .registry
        .deregister_where(&name("bulk"), on_first_address, &Caller::Unchecked)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let (_, gone) = next_events(&mut events).await;
    assert_eq!(
        gone.iter().map(|(kind, _)| *kind).collect::<Vec<_>>(),
        vec![InstanceEventKind::Offline(OfflineReason::Deregistered); 2],
        "both at one revision"
    );
    assert_eq!(
        f.registry
            .deregister_where(&name("bulk"), on_first_address, &Caller::Unchecked)
            .await
            .unwrap(),
        0
    );
}

/// Defect M12: a registration through one API does not change an instance another API
/// registered (bender's 4 s TTL replacing a native 30 s one); it is refused, and the instance
/// stays as it was. The API that registered it renews and updates it as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_through_another_api_cannot_change_an_instance() {
    let f = fixture().await;
    let native = spec("web", "10.0.0.7", 80, 30_000);
    f.registry
        .register(native.clone(), &Caller::Unchecked)
        .await
        .unwrap();
    let bender = InstanceDraft {
        address: Some("10.0.0.7".into()),
        port: Some(80),
        ttl_ms: Some(4_000),
        version: Some("v2".into()),
        origin: berth_domain::Origin::Bender,
        ..InstanceDraft::default()
    }
    .validate("web", None, &InstanceDefaults::default())
    .unwrap();
    match f.registry.register(bender, &Caller::Unchecked).await {
        Err(RegistryError::Conflict { message, .. }) => assert!(
            message.contains("registered through the native API; a bender registration"),
            "{message}"
        ),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let kept = f
        .registry
        .instance(&name("web"), &id("10.0.0.7:80"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.instance.spec, native);
    let renewed = f
        .registry
        .register(native, &Caller::Unchecked)
        .await
        .unwrap();
    assert_eq!(renewed.outcome, RegistrationOutcome::Renewed);
}
