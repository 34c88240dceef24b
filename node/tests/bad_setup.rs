//! A bad setup gets a clear error, never a panic or a hang: a port in use, peers that never
//! answer, a data directory that cannot be written, a client with nowhere to go.
mod common;
use common::*;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use watchtrie_node::{
    cluster_config, free_loopback_addresses, start, ClientError, KvClient, NodeError,
    MAX_EVENT_QUEUE_SIZE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_refused_before_anything_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let result = within(
        "start",
        start(cluster_config(1, &[address]).unwrap(), dir.path()),
    )
    .await;
    match result {
        Err(NodeError::PortInUse { address: a }) => assert_eq!(a, address),
        other => panic!("expected PortInUse, got {other:?}"),
    }
    let message = NodeError::PortInUse { address }.to_string();
    assert!(message.contains(&address.to_string()), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_queue_too_large_to_allocate_is_refused_before_anything_is_created() {
    let address = free_loopback_addresses(1).unwrap()[0];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for size in [MAX_EVENT_QUEUE_SIZE + 1, usize::MAX] {
        let mut config = cluster_config(1, &[address]).unwrap();
        config.raft.watch.event_queue_size = size;
        match within("start", start(config, &data)).await {
            Err(NodeError::OutOfRange { value, max, .. }) => {
                assert_eq!((value, max), (size, MAX_EVENT_QUEUE_SIZE))
            }
            other => panic!("expected OutOfRange, got {other:?}"),
        }
    }
    assert!(!data.exists(), "no directory made");
    assert!(TcpListener::bind(address).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_that_cannot_be_written_is_a_typed_error() {
    // Root may write anywhere, so make the directory impossible instead: under a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let address = free_loopback_addresses(1).unwrap()[0];
    let result = within(
        "start",
        start(cluster_config(1, &[address]).unwrap(), file.join("data")),
    )
    .await;
    match result {
        Err(NodeError::DataDir { path, .. }) => assert!(path.starts_with(&file)),
        other => panic!("expected DataDir, got {other:?}"),
    }
    // Nothing was left listening.
    assert!(TcpListener::bind(address).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_never_answer_give_no_leader_within_the_wait_and_shutdown_still_returns() {
    // Nodes 2 and 3 are configured but never started: node 1 can elect no leader.
    let addresses = free_loopback_addresses(3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = within(
        "start",
        start(cluster_config(1, &addresses).unwrap(), dir.path()),
    )
    .await
    .expect("a node starts without its peers");
    let waited = Duration::from_secs(2);
    match node.wait_for_leader(waited).await {
        Err(NodeError::NoLeader { waited: w }) => assert_eq!(w, waited),
        other => panic!("expected NoLeader, got {other:?}"),
    }
    let request_deadline = Duration::from_secs(2);
    let mut client = KvClient::new(addresses.clone())
        .unwrap()
        .with_request_deadline(request_deadline);
    let began = Instant::now();
    match within("a write with no leader", client.put("/k", "v")).await {
        Err(ClientError::Unavailable { last, .. }) => assert!(!last.is_empty()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The client keeps to its own deadline: past it by one round of tries at most (the
    // peers refuse at once; node 1 answers), with room for a loaded machine.
    let took = began.elapsed();
    assert!(
        took < request_deadline * 5,
        "a 2 s request deadline took {took:?}"
    );
    within("shutdown", node.shutdown())
        .await
        .expect("a node that never had a leader stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_nodes_are_all_gone_fails_at_its_deadline() {
    // Addresses that nothing listens on (free a moment ago).
    let addresses = free_loopback_addresses(2).unwrap();
    let mut client = KvClient::new(addresses)
        .unwrap()
        .with_request_deadline(Duration::from_millis(500));
    match within("a write to nowhere", client.delete("/k")).await {
        Err(ClientError::Unavailable { waited, last }) => {
            assert!(waited >= Duration::from_millis(500));
            assert!(last.contains("connect"), "{last}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match within("leader discovery", client.leader()).await {
        Err(ClientError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn a_node_id_outside_the_cluster_has_no_configuration() {
    let addresses = free_loopback_addresses(2).unwrap();
    assert!(cluster_config(0, &addresses).is_none());
    assert!(cluster_config(3, &addresses).is_none());
    assert!(cluster_config(u32::MAX, &addresses).is_none());
    let config = cluster_config(2, &addresses).unwrap();
    assert_eq!(config.cluster.listen_address, addresses[1]);
    assert_eq!(config.cluster.initial_cluster.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_accept_and_never_answer_keep_the_client_to_its_deadline() {
    // Listening sockets that are never served: connections complete in the kernel's backlog
    // and every call on them waits for an answer that never comes.
    let silent: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<_> = silent.iter().map(|l| l.local_addr().unwrap()).collect();
    let deadline = Duration::from_millis(300);
    let mut client = KvClient::new(addresses)
        .unwrap()
        .with_request_deadline(deadline);
    let began = Instant::now();
    match within("a write to silent nodes", client.put("/k", "v")).await {
        Err(ClientError::Unavailable { waited, .. }) => assert!(waited >= deadline),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // One attempt on each silent endpoint would be 2 s apiece: every attempt gets only what
    // is left of the deadline (a bound on a hang, with room for a loaded machine).
    let took = began.elapsed();
    assert!(
        took < deadline * 5,
        "a 300 ms request deadline took {took:?}"
    );
    let began = Instant::now();
    match within("leader discovery", client.leader()).await {
        Err(ClientError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(began.elapsed() < deadline * 5);
    drop(silent);
}
