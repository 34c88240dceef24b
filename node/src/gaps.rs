//! [`GapReporting`]: d-engine's state machine, reporting each snapshot it installs to the
//! watch dispatcher as a gap in the event stream.
//!
//! A follower that falls behind the leader's purged log gets the leader's snapshot instead
//! of the entries, and d-engine's state-machine handler broadcasts no event for what the
//! snapshot covers. Without this the dispatcher would never know: its history would resume
//! a watch across the hole as if nothing were missing. Every other method passes through.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use d_engine_core::{ApplyEntry, ApplyResult, Error, ScanResult, StateMachine};
use d_engine_proto::common::LogId;
use d_engine_proto::server::storage::SnapshotMetadata;
use tracing::info;
use watchtrie::GapReporter;

/// A state machine that tells the dispatcher about every snapshot it installs.
pub struct GapReporting<SM> {
    inner: SM,
    /// `None` for an engine without a gap hook (d-engine-core's own).
    gaps: Option<GapReporter>,
}

impl<SM> GapReporting<SM> {
    /// Wraps `inner`, reporting installed snapshots to `gaps`.
    pub fn new(inner: SM, gaps: Option<GapReporter>) -> Self {
        Self { inner, gaps }
    }
}

impl<SM: fmt::Debug> fmt::Debug for GapReporting<SM> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GapReporting")
            .field("inner", &self.inner)
            .field("reports_gaps", &self.gaps.is_some())
            .finish()
    }
}

#[async_trait]
impl<SM: StateMachine> StateMachine for GapReporting<SM> {
    async fn start(&self) -> Result<(), Error> {
        self.inner.start().await
    }

    fn stop(&self) -> Result<(), Error> {
        self.inner.stop()
    }

    fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    fn get(&self, key_buffer: &[u8]) -> Result<Option<Bytes>, Error> {
        self.inner.get(key_buffer)
    }

    fn entry_term(&self, entry_id: u64) -> Option<u64> {
        self.inner.entry_term(entry_id)
    }

    async fn apply_chunk(&self, chunk: &[ApplyEntry]) -> Result<Vec<ApplyResult>, Error> {
        self.inner.apply_chunk(chunk).await
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    fn update_last_applied(&self, last_applied: LogId) {
        self.inner.update_last_applied(last_applied)
    }

    fn last_applied(&self) -> LogId {
        self.inner.last_applied()
    }

    fn persist_last_applied(&self, last_applied: LogId) -> Result<(), Error> {
        self.inner.persist_last_applied(last_applied)
    }

    fn update_last_snapshot_metadata(&self, metadata: &SnapshotMetadata) -> Result<(), Error> {
        self.inner.update_last_snapshot_metadata(metadata)
    }

    fn snapshot_metadata(&self) -> Option<SnapshotMetadata> {
        self.inner.snapshot_metadata()
    }

    fn persist_last_snapshot_metadata(&self, metadata: &SnapshotMetadata) -> Result<(), Error> {
        self.inner.persist_last_snapshot_metadata(metadata)
    }

    async fn apply_snapshot_from_file(
        &self,
        metadata: &SnapshotMetadata,
        snapshot_path: PathBuf,
    ) -> Result<(), Error> {
        self.inner
            .apply_snapshot_from_file(metadata, snapshot_path)
            .await?;
        // Reported before the handler applies (and broadcasts) any entry after the snapshot,
        // as `GapReporter` asks; the dispatcher acts on it at the first event above it.
        if let (Some(gaps), Some(last)) = (&self.gaps, metadata.last_included.as_ref()) {
            info!(
                through = last.index,
                "snapshot installed: its entries will have no events"
            );
            gaps.report(last.index);
        }
        Ok(())
    }

    async fn generate_snapshot_data(
        &self,
        new_snapshot_dir: PathBuf,
        last_included: LogId,
    ) -> Result<Bytes, Error> {
        self.inner
            .generate_snapshot_data(new_snapshot_dir, last_included)
            .await
    }

    fn save_hard_state(&self) -> Result<(), Error> {
        self.inner.save_hard_state()
    }

    fn flush(&self) -> Result<(), Error> {
        self.inner.flush()
    }

    async fn flush_async(&self) -> Result<(), Error> {
        self.inner.flush_async().await
    }

    async fn reset(&self) -> Result<(), Error> {
        self.inner.reset().await
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<ScanResult, Error> {
        self.inner.scan_prefix(prefix)
    }
}
