//! Two berth nodes on one etcd, the highly available shape: no master, each node sees and
//! serves what the other registered, and stopping one loses nothing.

use crate::instances::{next_event, registration};
use crate::support::{Berth, wait_for_metric};
use berth_testkit::EtcdServer;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_etcd_share_instances_events_and_heartbeats() {
    let etcd = EtcdServer::start();
    let mut a = Berth::on_etcd(&etcd);
    let b = Berth::on_etcd(&etcd);
    let (client_a, client_b) = (a.client(), b.client());

    let mut events_b = client_b.events(Some("shared"), None).await.unwrap();
    let (instance, _) = client_a
        .register("shared", &registration("10.7.0.1", 80, 2_000))
        .await
        .unwrap();
    let online = next_event(&mut events_b).await;
    assert_eq!(online.kind, "online");
    assert_eq!(online.data["instance"]["id"], "10.7.0.1:80");
    let seen_by_b = client_b.instances("shared", &[]).await.unwrap();
    assert_eq!(seen_by_b.instances.len(), 1);

    // Heartbeats sent to B keep alive what A registered, well past the TTL.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        client_b.heartbeat("shared", &instance.id).await.unwrap();
    }
    assert_eq!(
        client_a
            .instances("shared", &[])
            .await
            .unwrap()
            .instances
            .len(),
        1
    );

    // A durable registration through A survives A stopping.
    client_a
        .register("shared", &registration("10.7.0.2", 80, 60_000))
        .await
        .unwrap();
    let status = a.terminate(Duration::from_secs(10));
    assert!(status.success());
    let ids: Vec<String> = client_b
        .instances("shared", &[])
        .await
        .unwrap()
        .instances
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, vec!["10.7.0.1:80", "10.7.0.2:80"]);

    // Nobody heartbeats the first one any more: B's stream reports it offline.
    let mut offline = next_event(&mut events_b).await;
    while offline.kind == "online" {
        offline = next_event(&mut events_b).await;
    }
    assert_eq!(offline.kind, "offline");
    assert_eq!(offline.data["reason"], "expired");
    assert_eq!(offline.data["instance"]["id"], "10.7.0.1:80");
}

/// etcd's own count of the watchers its clients hold.
async fn etcd_watchers(etcd: &EtcdServer) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", etcd.endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("etcd reports its watchers")
}

/// A thousand event streams on one node all see a change made on the other, and the node's
/// etcd watchers do not grow with them: every stream is fed by the node's one follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_on_one_node_see_the_other_nodes_change_on_one_etcd_watch() {
    let etcd = EtcdServer::start();
    let a = Berth::on_etcd(&etcd);
    let b = Berth::on_etcd(&etcd);
    // Each node's follower watches once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while etcd_watchers(&etcd).await < 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the followers never watched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = etcd_watchers(&etcd).await;
    let client_b = b.client();
    let mut streams = Vec::new();
    for _ in 0..1_000 {
        streams.push(client_b.events(Some("fanout"), None).await.unwrap());
    }
    wait_for_metric(&b.base, "berth_http_event_streams", 1_000.0).await;
    assert_eq!(
        etcd_watchers(&etcd).await,
        before,
        "event streams opened etcd watches"
    );
    a.client()
        .register("fanout", &registration("10.7.1.1", 80, 60_000))
        .await
        .unwrap();
    for stream in &mut streams {
        let online = next_event(stream).await;
        assert_eq!(online.kind, "online");
        assert_eq!(online.data["instance"]["id"], "10.7.1.1:80");
    }
}
