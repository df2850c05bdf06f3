//! Snapshots in JetStream's object store, so that a follower with an empty
//! disk starts from the newest one and then reads only the stream after it,
//! instead of needing every frame since the first (a stream's limits, or a
//! purge, drop old frames; a long stream takes long to apply).
//!
//! - Bucket: named like the stream ([`bucket_name`]), with the stream's
//!   replicas; created by the first process that stores a snapshot
//!   (`ringledger follow --store-snapshots`).
//! - One object per snapshot, `snapshot-<seq:020>`: the snapshot file's
//!   bytes exactly as [`crate::journal::write_snapshot`] wrote them (header
//!   with its CRCs and the journal's chain head at that seq, then the
//!   Ledger), with the seq and the head in the object's metadata. The object
//!   store adds a SHA-256 digest of the bytes, which the client checks as it
//!   reads them back.
//! - After a new one is stored, all but the newest [`SNAPSHOTS_STORED_MAX`]
//!   are deleted.
//!
//! A bootstrap checks what it fetched as recovery checks a snapshot file
//! (digest, CRCs, decode, the Ledger's invariants, the journal settings), and
//! the chain head it records against the stream itself: the next frame the
//! stream delivers must name that head as its parent.

use std::collections::HashMap;

use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::Context;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::{unavailable, ReplicationConfig, ReplicationError};
use crate::journal::{self, ChainHead, JournalError};
use crate::ledger::Ledger;

/// Snapshots kept in the bucket: the newest, and one before it in case the
/// newest was being replaced while a follower read it.
pub const SNAPSHOTS_STORED_MAX: usize = 2;

const OBJECT_PREFIX: &str = "snapshot-";
const METADATA_SEQ: &str = "last_seq";
const METADATA_HEAD: &str = "chain_head";

/// The object store bucket that holds a stream's snapshots: the stream's
/// own name (JetStream keeps it in a stream of its own, `OBJ_<name>`).
pub fn bucket_name(config: &ReplicationConfig) -> String {
    config.stream.clone()
}

fn object_name(seq: u64) -> String {
    format!("{OBJECT_PREFIX}{seq:020}")
}

fn object_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(OBJECT_PREFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A snapshot fetched from the bucket and checked: the Ledger and the
/// journal's chain head at its seq.
pub struct StoredSnapshot {
    pub ledger: Ledger,
    pub head: ChainHead,
}

/// A stream's snapshot bucket.
pub(super) struct SnapshotStore {
    store: ObjectStore,
    bucket: String,
}

impl SnapshotStore {
    /// The bucket, created if missing.
    pub(super) async fn open(
        js: &Context,
        config: &ReplicationConfig,
    ) -> Result<SnapshotStore, ReplicationError> {
        let bucket = bucket_name(config);
        let store = match js.get_object_store(&bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    description: Some(format!("ringledger snapshots of stream {}", config.stream)),
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    unavailable(&format!("cannot create object store bucket {bucket}"), e)
                })?,
        };
        Ok(SnapshotStore { store, bucket })
    }

    /// The bucket if it exists (None: nobody stored a snapshot yet).
    pub(super) async fn existing(
        js: &Context,
        config: &ReplicationConfig,
    ) -> Result<Option<SnapshotStore>, ReplicationError> {
        let bucket = bucket_name(config);
        match js.get_object_store(&bucket).await {
            Ok(store) => Ok(Some(SnapshotStore { store, bucket })),
            Err(e) if bucket_missing(&e) => Ok(None),
            Err(e) => Err(unavailable(
                &format!("cannot open object store bucket {bucket}"),
                e,
            )),
        }
    }

    pub(super) fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Stores `bytes`, a snapshot file of the journal at `head`, then
    /// deletes all but the newest [`SNAPSHOTS_STORED_MAX`].
    pub(super) async fn put(&self, head: ChainHead, bytes: &[u8]) -> Result<(), ReplicationError> {
        let name = object_name(head.seq);
        let metadata = HashMap::from([
            (METADATA_SEQ.to_string(), head.seq.to_string()),
            (METADATA_HEAD.to_string(), head.to_string()),
        ]);
        let mut reader = bytes;
        self.store
            .put(
                ObjectMetadata {
                    name: name.clone(),
                    description: Some(format!("ringledger snapshot at journal seq {}", head.seq)),
                    metadata,
                    ..Default::default()
                },
                &mut reader,
            )
            .await
            .map_err(|e| {
                unavailable(&format!("cannot store {name} in bucket {}", self.bucket), e)
            })?;
        let mut seqs = self.seqs().await?;
        seqs.sort_unstable();
        let stale = seqs.len().saturating_sub(SNAPSHOTS_STORED_MAX);
        for seq in &seqs[..stale] {
            let old = object_name(*seq);
            self.store.delete(&old).await.map_err(|e| {
                unavailable(
                    &format!("cannot delete {old} from bucket {}", self.bucket),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// The seqs of the snapshots in the bucket.
    async fn seqs(&self) -> Result<Vec<u64>, ReplicationError> {
        let listing = |e: &dyn std::fmt::Display| {
            unavailable(
                &format!("cannot list object store bucket {}", self.bucket),
                e,
            )
        };
        let mut list = self.store.list().await.map_err(|e| listing(&e))?;
        let mut seqs = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| listing(&e))?;
            if let Some(seq) = object_seq(&info.name) {
                seqs.push(seq);
            }
        }
        Ok(seqs)
    }

    /// The newest snapshot in the bucket (None: there is none), checked as
    /// recovery checks a snapshot file, and made with `ledger_config`. A
    /// snapshot that fails a check is an error naming it: it is never
    /// passed over for an older one silently.
    pub(super) async fn newest(
        &self,
        ledger_config: crate::LedgerConfig,
    ) -> Result<Option<StoredSnapshot>, ReplicationError> {
        let Some(seq) = self.seqs().await?.into_iter().max() else {
            return Ok(None);
        };
        let name = object_name(seq);
        let origin = format!("object {name} in bucket {}", self.bucket);
        let mut object = self
            .store
            .get(&name)
            .await
            .map_err(|e| unavailable(&format!("cannot fetch {origin}"), e))?;
        let info_seq = object.info().metadata.get(METADATA_SEQ).cloned();
        let mut bytes = Vec::with_capacity(object.info().size);
        object.read_to_end(&mut bytes).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                corrupt(&origin, format!("its bytes do not match its digest: {e}"))
            } else {
                unavailable(&format!("cannot read {origin}"), e)
            }
        })?;
        if info_seq.as_deref() != Some(seq.to_string().as_str()) {
            return Err(corrupt(
                &origin,
                format!("its metadata says seq {info_seq:?}, its name seq {seq}"),
            ));
        }
        let (ledger, head) = journal::check_snapshot(&bytes, seq)
            .map_err(|why| corrupt(&origin, format!("not a usable snapshot: {why}")))?;
        if ledger.config() != ledger_config {
            return Err(ReplicationError::Config(format!(
                "{origin} was taken with {:?}, but the stream's journal runs with {ledger_config:?}",
                ledger.config()
            )));
        }
        Ok(Some(StoredSnapshot { ledger, head }))
    }
}

/// The server said the bucket's stream does not exist (anything else, e.g.
/// no answer, is an outage).
fn bucket_missing(e: &async_nats::jetstream::context::ObjectStoreError) -> bool {
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
    use async_nats::jetstream::ErrorCode;
    use std::error::Error as _;
    e.source()
        .and_then(|source| source.downcast_ref::<GetStreamError>())
        .is_some_and(|e| {
            matches!(e.kind(), GetStreamErrorKind::JetStream(js)
                if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
        })
}

fn corrupt(origin: &str, why: String) -> ReplicationError {
    ReplicationError::Journal(JournalError::corrupt(
        std::path::PathBuf::from(origin),
        0,
        why,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_carry_the_seq_and_sort_by_it() {
        assert_eq!(object_name(42), "snapshot-00000000000000000042");
        assert_eq!(object_seq(&object_name(42)), Some(42));
        assert_eq!(object_seq(&object_name(u64::MAX)), Some(u64::MAX));
        for name in [
            "snapshot-42",
            "snapshot-0000000000000000004x",
            "other-00000000000000000042",
        ] {
            assert_eq!(object_seq(name), None, "{name}");
        }
    }
}
