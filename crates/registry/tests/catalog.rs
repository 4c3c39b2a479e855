//! The catalog through the registry, on the embedded store: flow's worked example and DAO
//! cases, the rules flow lacked (every cycle refused, a ceiling, store-guaranteed unique
//! ports), history, and all-or-nothing import.

use berth_domain::Timestamp;
use berth_domain::catalog::allocator::PortRange;
use berth_domain::catalog::{
    AppId, ApplicationDraft, CatalogError, Kind, KindDraft, KindName, NewApplication, PortChoice,
    PortDraft, WholeApplicationDraft,
};
use berth_registry::catalog::{AppQuery, AppSort, CatalogSnapshot, ChangeType};
use berth_registry::{Registry, RegistryConfig, RegistryError, SystemWallClock};
use berth_store::AnyStore;
use berth_store::embedded::{EmbeddedOptions, EmbeddedStore};
use std::collections::BTreeSet;
use std::sync::Arc;

struct Fixture {
    registry: Registry,
    store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

async fn fixture_with(ports: PortRange) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
        .await
        .unwrap();
    let registry = Registry::start(
        AnyStore::Embedded(store.clone()),
        RegistryConfig {
            ports,
            ..RegistryConfig::default()
        },
        Arc::new(SystemWallClock),
    )
    .await
    .unwrap();
    Fixture {
        registry,
        store,
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    fixture_with(PortRange::default()).await
}

fn app(id: &str) -> AppId {
    AppId::parse("id", id).unwrap()
}

fn kind(name: &str) -> KindName {
    KindName::parse("kind", name).unwrap()
}

fn new_kind(name: &str, default_port: i64) -> Kind {
    KindDraft {
        name: Some(name.into()),
        default_port: Some(default_port),
        offset: None,
    }
    .validate(None, 10)
    .unwrap()
}

fn new_app(id: &str, kind: &str, dependencies: &[&str]) -> NewApplication {
    ApplicationDraft {
        id: Some(id.into()),
        kind: Some(kind.into()),
        dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
        ..ApplicationDraft::default()
    }
    .validate()
    .unwrap()
}

async fn create(registry: &Registry, id: &str, kind: &str) -> u16 {
    registry
        .create_app(new_app(id, kind, &[]))
        .await
        .unwrap()
        .ports()[0]
        .external
}

async fn add_kind(registry: &Registry, id: &str, kind_name: &str) -> u16 {
    let (app, _) = registry
        .add_port(&app(id), &kind(kind_name), PortChoice::default())
        .await
        .unwrap();
    app.port_of(&kind(kind_name)).unwrap().external
}

fn catalog_error(result: Result<impl std::fmt::Debug, RegistryError>) -> CatalogError {
    match result {
        Err(RegistryError::Catalog(error)) => error,
        other => panic!("expected a catalog error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_worked_example_number_for_number() {
    let f = fixture().await;
    let r = &f.registry;
    let kinds: Vec<String> = r
        .kinds()
        .await
        .unwrap()
        .iter()
        .map(|k| k.kind.name().to_string())
        .collect();
    assert_eq!(kinds, vec!["nodejs", "play", "postgresql"], "seeded kinds");
    assert_eq!(create(r, "registry", "play").await, 6011);
    assert_eq!(create(r, "registry-postgresql", "postgresql").await, 6019);
    assert_eq!(create(r, "www", "nodejs").await, 6020);
    assert_eq!(create(r, "user", "play").await, 6031);
    assert_eq!(add_kind(r, "registry", "nodejs").await, 6010);
    assert_eq!(create(r, "registry-api2", "play").await, 6041);
    r.create_kind(new_kind("redis", 6379)).await.unwrap();
    assert_eq!(add_kind(r, "www", "redis").await, 6022);
    // Internal ports come from the kind.
    let www = r.app(&app("www")).await.unwrap().unwrap();
    let internals: Vec<u16> = www.ports().iter().map(|p| p.internal).collect();
    assert_eq!(internals, vec![7050, 6379]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_dao_cases() {
    let f = fixture().await;
    let r = &f.registry;
    // ui / api / db of one family: base+0, +1, +9.
    let ui = create(r, "shop", "nodejs").await;
    assert_eq!(ui % 10, 0);
    assert_eq!(create(r, "shop-api", "play").await, ui + 1);
    assert_eq!(create(r, "shop-db", "postgresql").await, ui + 9);
    // "update allocates new ports": nodejs N, then play N+1, and idempotent.
    let n = create(r, "solo", "nodejs").await;
    assert_eq!(add_kind(r, "solo", "play").await, n + 1);
    let (_, changed) = r
        .add_port(&app("solo"), &kind("play"), PortChoice::default())
        .await
        .unwrap();
    assert!(!changed, "adding a kind the app has is a no-op");
    // A second play in a family whose block has it: the block after the high-water mark.
    let next = create(r, "shop-admin", "play").await;
    assert_eq!(next, r.port_range().base(n) + 10 + 1);

    // Delete frees the ports; the id can be reused; a freed block never goes to a new family.
    r.delete_app(&app("solo")).await.unwrap();
    assert!(r.app(&app("solo")).await.unwrap().is_none());
    let reused = create(r, "solo", "nodejs").await;
    assert_ne!(r.port_range().base(reused), r.port_range().base(n));
    let other = create(r, "fresh", "play").await;
    assert!(other > reused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ports_are_checked_and_kept_unique() {
    let f = fixture().await;
    let r = &f.registry;
    create(r, "aa", "play").await;
    let taken = catalog_error(
        r.create_app(NewApplication {
            port: PortChoice {
                external: Some(6011),
                internal: Some(1234),
            },
            ..new_app("bb", "play", &[])
        })
        .await,
    );
    assert_eq!(
        taken,
        CatalogError::PortTaken {
            port: 6011,
            owner: app("aa")
        }
    );
    let chosen = r
        .create_app(NewApplication {
            port: PortChoice {
                external: Some(30_000),
                internal: Some(1234),
            },
            ..new_app("bb", "play", &[])
        })
        .await
        .unwrap();
    assert_eq!(
        (chosen.ports()[0].external, chosen.ports()[0].internal),
        (30_000, 1234)
    );
    // An explicit port far up moves nothing: the next new family's block follows the ports
    // the allocator chose (defect F6), and the explicit port's block stays its own.
    assert_eq!(create(r, "cc", "play").await, 6_021);
    assert!(matches!(
        catalog_error(r.create_app(new_app("dd", "nope", &[])).await),
        CatalogError::KindNotFound(_)
    ));
    assert!(matches!(
        catalog_error(r.create_app(new_app("aa", "play", &[])).await),
        CatalogError::AppExists(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_range_is_a_clear_error() {
    let f = fixture_with(PortRange {
        start: 6000,
        block_size: 10,
        ceiling: 6029,
        denied: vec![],
    })
    .await;
    let r = &f.registry;
    assert_eq!(create(r, "one", "play").await, 6011);
    assert_eq!(create(r, "two", "play").await, 6021);
    assert_eq!(
        catalog_error(r.create_app(new_app("three", "play", &[])).await),
        CatalogError::RangeExhausted { ceiling: 6029 }
    );
    // Nothing was half-written.
    assert!(r.app(&app("three")).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cycle_is_refused_with_its_path() {
    let f = fixture().await;
    let r = &f.registry;
    for id in ["aa", "bb", "cc"] {
        create(r, id, "play").await;
    }
    r.add_dependency(&app("aa"), &app("bb")).await.unwrap();
    r.add_dependency(&app("bb"), &app("cc")).await.unwrap();
    let cycle = catalog_error(r.add_dependency(&app("cc"), &app("aa")).await);
    assert_eq!(cycle.to_string(), "dependency cycle: cc -> aa -> bb -> cc");
    assert!(matches!(
        catalog_error(r.add_dependency(&app("aa"), &app("zz")).await),
        CatalogError::DependencyMissing(_)
    ));
    // Replacing keeps or replaces; removing is idempotent.
    r.set_dependencies(&app("aa"), [app("cc")].into())
        .await
        .unwrap();
    assert_eq!(
        r.app(&app("aa")).await.unwrap().unwrap().dependencies(),
        &BTreeSet::from([app("cc")])
    );
    r.remove_dependency(&app("aa"), &app("bb")).await.unwrap();
    // Waves, dependencies first.
    let waves = r.start_waves().await.unwrap();
    assert_eq!(waves, vec![vec![app("cc")], vec![app("aa"), app("bb")]]);
    assert_eq!(
        r.start_order_of(&app("aa")).await.unwrap().unwrap(),
        vec![app("cc"), app("aa")]
    );
    // An app others depend on cannot go.
    let blocked = catalog_error(r.delete_app(&app("cc")).await);
    assert_eq!(
        blocked,
        CatalogError::HasDependents {
            app: app("cc"),
            dependents: vec![app("aa"), app("bb")]
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dependency_edits_never_close_a_cycle() {
    let f = fixture().await;
    let r = &f.registry;
    let ids: Vec<String> = (0..8).map(|i| format!("node{i}")).collect();
    for id in &ids {
        create(r, id, "nodejs").await;
    }
    // Every ordered pair at once: half of these would close cycles with the other half.
    let mut tasks = Vec::new();
    for from in &ids {
        for to in &ids {
            if from != to {
                let (r, from, to) = (r.clone(), app(from), app(to));
                tasks.push(tokio::spawn(
                    async move { r.add_dependency(&from, &to).await },
                ));
            }
        }
    }
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(RegistryError::Catalog(CatalogError::Cycle(_))) => refused += 1,
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert!(refused > 0);
    let waves = r.start_waves().await.expect("the graph stayed acyclic");
    assert_eq!(waves.iter().map(Vec::len).sum::<usize>(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_allocations_are_all_distinct() {
    let f = fixture().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let r = f.registry.clone();
        // A mix of new families and members of a few shared ones.
        let id = if i % 2 == 0 {
            format!("fam{}-app{i}", i % 5)
        } else {
            format!("solo{i}")
        };
        let kind = ["nodejs", "play", "postgresql"][i % 3];
        tasks.push(tokio::spawn(async move {
            r.create_app(new_app(&id, kind, &[])).await
        }));
    }
    let mut ports = BTreeSet::new();
    for task in tasks {
        let app = task.await.unwrap().unwrap();
        assert!(
            ports.insert(app.ports()[0].external),
            "port {} twice",
            app.ports()[0].external
        );
    }
    assert_eq!(ports.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_can_only_be_deleted_when_unused() {
    let f = fixture().await;
    let r = &f.registry;
    create(r, "user1", "play").await;
    assert!(matches!(
        catalog_error(r.delete_kind(&kind("play")).await),
        CatalogError::KindInUse { .. }
    ));
    r.delete_kind(&kind("nodejs")).await.unwrap();
    assert!(r.kind(&kind("nodejs")).await.unwrap().is_none());
    assert!(matches!(
        catalog_error(r.delete_kind(&kind("nodejs")).await),
        CatalogError::KindNotFound(_)
    ));
    // Allocating while a deletion runs: either the allocation wins and the deletion is
    // refused, or the deletion wins and the allocation finds no kind. Never both.
    r.create_kind(new_kind("racy", 1000)).await.unwrap();
    let racy = kind("racy");
    let (deleted, allocated) = tokio::join!(
        r.delete_kind(&racy),
        r.create_app(new_app("racer", "racy", &[]))
    );
    match (deleted, allocated) {
        (Ok(()), Err(_)) => assert!(r.app(&app("racer")).await.unwrap().is_none()),
        (Err(_), Ok(_)) => assert!(r.kind(&kind("racy")).await.unwrap().is_some()),
        (deleted, allocated) => panic!("both or neither: {deleted:?} {allocated:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_journalled() {
    let f = fixture().await;
    let r = &f.registry;
    create(r, "journal", "play").await;
    add_kind(r, "journal", "nodejs").await;
    r.delete_app(&app("journal")).await.unwrap();
    let history = r.app_history(&app("journal")).await.unwrap();
    let changes: Vec<ChangeType> = history.iter().map(|h| h.change).collect();
    assert_eq!(
        changes,
        vec![ChangeType::Insert, ChangeType::Update, ChangeType::Delete]
    );
    assert!(history.windows(2).all(|w| w[0].revision < w[1].revision));
    assert_eq!(history[1].record.ports().len(), 2);
    let kinds = r.kind_history(&kind("play")).await.unwrap();
    assert_eq!(kinds[0].change, ChangeType::Insert);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_filter_and_sort_like_flow_and_port_descends() {
    let f = fixture().await;
    let r = &f.registry;
    for (id, kind_name) in [
        ("shop", "nodejs"),
        ("shop-api", "play"),
        ("other", "play"),
        ("shopping", "play"),
    ] {
        create(r, id, kind_name).await;
    }
    let ids = |apps: Vec<berth_domain::catalog::Application>| -> Vec<String> {
        apps.into_iter().map(|a| a.id().to_string()).collect()
    };
    let family = AppQuery {
        prefix: Some("shop".into()),
        ..AppQuery::default()
    };
    assert_eq!(
        ids(r.apps(&family).await.unwrap()),
        vec!["shop", "shop-api"]
    );
    let by_port = AppQuery {
        sort: AppSort::Port,
        ..AppQuery::default()
    };
    let ascending = ids(r.apps(&by_port).await.unwrap());
    let descending = ids(r
        .apps(&AppQuery {
            sort: AppSort::PortDescending,
            ..AppQuery::default()
        })
        .await
        .unwrap());
    let mut reversed = ascending.clone();
    reversed.reverse();
    assert_eq!(descending, reversed, "-port really descends");
    let q = AppQuery {
        q: Some(" SHOP ".into()),
        kinds: vec![kind("play")],
        limit: Some(1),
        offset: 1,
        ..AppQuery::default()
    };
    assert_eq!(ids(r.apps(&q).await.unwrap()), vec!["shopping"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_restores_everything_or_nothing() {
    let source = fixture().await;
    let r = &source.registry;
    create(r, "base", "postgresql").await;
    r.create_app(new_app("web", "play", &["base"]))
        .await
        .unwrap();
    let snapshot = r.export().await.unwrap();

    let target = fixture().await;
    let summary = target.registry.import(snapshot.clone()).await.unwrap();
    assert_eq!((summary.applications, summary.kinds_unchanged), (2, 3));
    assert_eq!(
        target.registry.export().await.unwrap().applications,
        snapshot.applications
    );
    // The allocator goes on where the source left off.
    assert_eq!(create(&target.registry, "later", "play").await, 6031);

    // Importing again: every clash is reported, and nothing changes.
    let before = target.registry.export().await.unwrap();
    match target.registry.import(snapshot).await {
        Err(RegistryError::Invalid(errors)) => {
            let fields: Vec<&str> = errors.all().iter().map(|e| e.field.as_str()).collect();
            assert!(fields.contains(&"applications[0].id"), "{fields:?}");
            assert!(
                fields.contains(&"applications[1].ports[0].external"),
                "{fields:?}"
            );
        }
        other => panic!("expected the import to be refused, got {other:?}"),
    }
    assert_eq!(target.registry.export().await.unwrap(), before);
}

/// `count` applications in a chain of dependencies, three per port block, ids `bulk-NNNNN`.
fn bulk_snapshot(count: usize) -> CatalogSnapshot {
    let kinds = ["nodejs", "play", "postgresql"];
    let id = |i: usize| app(&format!("bulk{:05}-svc{}", i / 3, i % 3));
    let applications = (0..count)
        .map(|i| {
            let family = (i / 3) as u16;
            let block = 6_010 + (family / 9) * 100 + (family % 9) * 10;
            WholeApplicationDraft {
                id: Some(id(i).to_string()),
                ports: vec![PortDraft {
                    kind: Some(kinds[i % 3].into()),
                    external: Some(i64::from(block + [0, 1, 9][i % 3])),
                    internal: Some(8000),
                }],
                dependencies: (i > 0).then(|| id(i - 1).to_string()).into_iter().collect(),
                created_at: Timestamp::from_millis(0),
            }
            .validate()
            .unwrap()
        })
        .collect();
    CatalogSnapshot {
        kinds: Vec::new(),
        applications,
        backends: Vec::new(),
        frontends: Vec::new(),
        high_water: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_bigger_than_one_transaction_lands_whole() {
    let target = fixture().await;
    let snapshot = bulk_snapshot(1_500);
    let summary = target.registry.import(snapshot.clone()).await.unwrap();
    assert_eq!(summary.applications, 1_500);
    let exported = target.registry.export().await.unwrap();
    let ids = |s: &CatalogSnapshot| -> BTreeSet<AppId> {
        s.applications.iter().map(|a| a.id().clone()).collect()
    };
    assert_eq!(ids(&exported), ids(&snapshot));
    let waves = target.registry.start_waves().await.unwrap();
    assert_eq!(waves.len(), 1_500);
}

/// Another node takes an id of the import's last part while the import is being written: the
/// parts already written are deleted again and the import fails; either way no half import
/// remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_loses_a_race_between_parts_leaves_nothing() {
    let mut undone = 0;
    for _round in 0..3 {
        let importer = fixture().await;
        let other = Registry::start(
            AnyStore::Embedded(importer.store.clone()),
            RegistryConfig::default(),
            Arc::new(SystemWallClock),
        )
        .await
        .unwrap();
        let snapshot = bulk_snapshot(3_000);
        let last = snapshot.applications.last().unwrap().id().clone();
        let first = snapshot.applications[0].id().clone();
        let import = {
            let registry = importer.registry.clone();
            tokio::spawn(async move { registry.import(snapshot).await })
        };
        // As soon as the first part is visible on the other node, it takes the last id.
        while other.app(&first).await.unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        let taken = other
            .create_app(new_app(last.as_str(), "postgresql", &[]))
            .await;
        let imported = import.await.unwrap();
        let apps = importer.registry.export().await.unwrap().applications;
        match (imported, taken) {
            (Ok(summary), Err(_)) => {
                assert_eq!(summary.applications, 3_000);
                assert_eq!(apps.len(), 3_000);
            }
            (Err(RegistryError::Conflict { .. }), Ok(_)) => {
                undone += 1;
                let ids: Vec<&str> = apps.iter().map(|a| a.id().as_str()).collect();
                assert_eq!(ids, vec![last.as_str()], "a half import remains");
                let history = importer.registry.app_history(&first).await.unwrap();
                assert!(history.is_empty(), "{history:?}");
            }
            (imported, taken) => panic!("import {imported:?}, other node {taken:?}"),
        }
    }
    assert!(undone > 0, "the race between parts never happened");
}

/// A wall clock the test moves.
#[derive(Clone, Default)]
struct SteppedClock(Arc<std::sync::atomic::AtomicU64>);

impl berth_registry::WallClock for SteppedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Defect F7(d): the journal is pruned to the newest entries of each record and by age (each
/// record's newest kept), and listings read it in a bounded window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_is_pruned_by_count_and_age_and_listed_by_window() {
    use berth_registry::catalog::{JournalRetention, JournalWindow};
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
        .await
        .unwrap();
    let clock = SteppedClock::default();
    clock
        .0
        .store(1_700_000_000_000, std::sync::atomic::Ordering::SeqCst);
    let r = Registry::start(
        AnyStore::Embedded(store),
        RegistryConfig {
            journal: JournalRetention {
                per_record: 3,
                max_age: Some(std::time::Duration::from_secs(3600)),
            },
            ..RegistryConfig::default()
        },
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    for _ in 0..4 {
        create(&r, "churn", "play").await;
        r.delete_app(&app("churn")).await.unwrap();
    }
    create(&r, "old", "play").await;
    add_kind(&r, "old", "nodejs").await;
    assert_eq!(r.app_history(&app("churn")).await.unwrap().len(), 8);

    // By count: 5 of churn's 8 go.
    assert_eq!(r.prune_journal().await.unwrap(), 5);
    assert_eq!(
        r.prune_journal().await.unwrap(),
        0,
        "pruning twice is harmless"
    );
    let churn = r.app_history(&app("churn")).await.unwrap();
    let changes: Vec<ChangeType> = churn.iter().map(|h| h.change).collect();
    assert_eq!(
        changes,
        vec![ChangeType::Delete, ChangeType::Insert, ChangeType::Delete]
    );

    // By age, two hours later: all but the newest of churn and of old; young is new.
    clock
        .0
        .fetch_add(2 * 3600 * 1000, std::sync::atomic::Ordering::SeqCst);
    create(&r, "young", "play").await;
    assert_eq!(r.prune_journal().await.unwrap(), 3);
    let churn = r.app_history(&app("churn")).await.unwrap();
    assert_eq!(churn.len(), 1);
    assert_eq!(churn[0].change, ChangeType::Delete);
    let old = r.app_history(&app("old")).await.unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].change, ChangeType::Update);
    assert_eq!(r.app_history(&app("young")).await.unwrap().len(), 1);

    // Listings: 3 entries in all, oldest first unless asked otherwise.
    let all = r
        .app_journal(&JournalWindow {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].revision < w[1].revision));
    let newest = r
        .app_journal(&JournalWindow {
            newest_first: true,
            offset: 1,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let revisions: Vec<_> = newest.iter().map(|h| h.revision).collect();
    assert_eq!(revisions, vec![all[1].revision, all[0].revision]);
    let only = r
        .app_journal(&JournalWindow {
            records: vec!["old".into(), "young".into()],
            ids: vec![all[2].revision, all[0].revision],
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].record.id(), &app("young"));
}

/// Defect M19: a deletion mark left by a node whose clock runs an hour ahead blocks the kind
/// for 30 s of this node's time after it first saw the mark, not for that hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_mark_from_a_clock_ahead_goes_stale_on_this_nodes_clock() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
        .await
        .unwrap();
    let clock = SteppedClock::default();
    let start = 1_700_000_000_000u64;
    clock.0.store(start, std::sync::atomic::Ordering::SeqCst);
    let r = Registry::start(
        AnyStore::Embedded(store.clone()),
        RegistryConfig::default(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    r.create_kind(new_kind("edge", 7000)).await.unwrap();
    // Another node, an hour ahead, marked the kind and died before finishing the deletion.
    let key = "/berth/catalog/kinds/edge";
    let stored = berth_store::get(&store, key).await.unwrap().unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    record["deleting_since_ms"] = serde_json::json!(start + 3_600_000);
    berth_store::put(&store, key, record.to_string(), None)
        .await
        .unwrap();

    match r.create_app(new_app("first", "edge", &[])).await {
        Err(RegistryError::Conflict { message, .. }) => {
            assert!(message.contains("being deleted"), "{message}")
        }
        other => panic!("expected the mark to hold, got {other:?}"),
    }
    clock
        .0
        .fetch_add(31_000, std::sync::atomic::Ordering::SeqCst);
    let created = r.create_app(new_app("first", "edge", &[])).await.unwrap();
    assert!(created.port_of(&kind("edge")).is_some());
}
