//! A follower that installs its leader's snapshot gets no events for the entries the
//! snapshot covers. The node reports that gap to its dispatcher (`GapReporting`), so a watch
//! resuming on that node from a revision inside the gap is told `Compacted` instead of being
//! replayed what the history holds as if nothing were missing; one resuming after the gap
//! gets the committed log's events exactly.
mod common;
use common::*;

use std::time::Duration;

use watchtrie::{CancelReason, HistoryOptions};
use watchtrie_node::{RaftNodeConfig, Watchtrie};

/// Snapshots every few entries, keeping almost no log behind them: a follower that misses
/// a few dozen writes can only catch up from a snapshot.
fn snapshot_often(config: &mut RaftNodeConfig) {
    let snapshot = &mut config.raft.snapshot;
    snapshot.enable = true;
    snapshot.max_log_entries_before_snapshot = 10;
    snapshot.retained_log_entries = 1;
    snapshot.snapshot_cool_down_since_last_check = Duration::from_millis(10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_a_follower_that_installed_a_snapshot_is_exact_or_compacted() {
    let engine = Watchtrie::default().with_history(HistoryOptions::new(10_000, 16 << 20));
    let mut cluster = Cluster::start_configured(3, 100, engine, snapshot_often).await;
    let leader = cluster.leader_id().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut client = cluster.client();
    for i in 0..6 {
        write_one(&mut client, i, format!("v{i}")).await;
    }
    cluster.stop_node(follower).await;
    for i in 6..60 {
        write_one(&mut client, i, format!("v{i}")).await;
    }
    cluster.start_node(follower).await;
    // Puts only (no compare-and-swap whose outcome depends on entries a purged log lacks).
    let watch = Watch::prefix("/stream/", false);
    let mut live = Watcher::register(cluster.node(follower), &watch, false);
    client.put("/stream/fence", "fence").await.unwrap();
    let fence = live.recv_until_key("/stream/fence").await;
    let fence_revision = fence.last().unwrap().revision;
    let gaps = cluster.node(follower).registry().metrics().read().gaps;
    assert!(
        gaps >= 1,
        "the restarted follower installed no snapshot, so this run checks nothing"
    );

    // A resume from every revision up to the fence: each is either compacted, pointing past
    // its start, or gets exactly the committed entries from its start on.
    let mut resumes: Vec<(u64, Watcher)> = (1..=fence_revision)
        .map(|from| {
            (
                from,
                Watcher::resume(cluster.node(follower), &watch, false, from),
            )
        })
        .collect();
    let mut outcomes = Vec::new();
    for (from, watcher) in &mut resumes {
        let first = within("a resume's first event", watcher.recv())
            .await
            .unwrap();
        let outcome = match first.cancel_reason() {
            Some(CancelReason::Compacted { oldest }) => Err(oldest),
            Some(other) => panic!("a resume from {from} was cancelled: {other:?}"),
            None if first.revision >= fence_revision => Ok(vec![first.revision]),
            None => {
                let mut got = vec![first.revision];
                got.extend(
                    watcher
                        .recv_through(fence_revision)
                        .await
                        .iter()
                        .map(|e| e.revision),
                );
                Ok(got)
            }
        };
        outcomes.push((*from, outcome));
    }
    let logs = cluster.stop_all().await;
    // The entries every node still holds, by index: the purged start of each log is gone.
    let mut log: Vec<_> = logs.into_iter().flatten().collect();
    log.sort_by_key(|e| e.index);
    log.dedup_by_key(|e| e.index);
    let mut compacted = 0;
    for (from, outcome) in outcomes {
        match outcome {
            Err(oldest) => {
                assert!(oldest > from, "from {from}: compacted with oldest {oldest}");
                compacted += 1;
            }
            Ok(got) => {
                // The expectation is known only where some node's log still holds every entry.
                let held = log
                    .iter()
                    .filter(|e| (from..=fence_revision).contains(&e.index))
                    .count() as u64;
                assert_eq!(
                    held,
                    fence_revision - from + 1,
                    "from {from}: not compacted, but the logs no longer hold all its entries (got {got:?})"
                );
                let want: Vec<u64> = expected(&log, fence_revision, &watch)
                    .iter()
                    .map(|e| e.revision)
                    .filter(|&r| r >= from)
                    .collect();
                assert_eq!(
                    got, want,
                    "a resume from {from} on node {follower} (gaps {gaps})"
                );
            }
        }
    }
    assert!(compacted > 0, "the early resumes must be compacted");
}
