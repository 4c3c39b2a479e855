//! The catalog journal's retention (newest entries per record, and by age) and its reads by
//! page: a listing holds only the entries it may answer with, never the whole journal.

use super::queries::HistoryEntry;
use super::records::decode_journal;
use crate::error::{RegistryError, Result};
use crate::{Registry, keys};
use berth_store::{KeyValue, Revision, Store, Txn, TxnOp};
use bytes::Bytes;
use std::collections::BinaryHeap;
use std::time::Duration;

/// How much of the journal is kept. Pruning runs every [`PRUNE_INTERVAL`] on every node
/// (deleting an entry twice is harmless), so between runs a record may pass its count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalRetention {
    /// The newest entries kept per kind or application (0: no count limit).
    pub per_record: usize,
    /// Entries older than this are dropped, the newest of each record excepted (`None`: no age
    /// limit).
    pub max_age: Option<Duration>,
}

impl Default for JournalRetention {
    fn default() -> Self {
        JournalRetention {
            per_record: 100,
            max_age: None,
        }
    }
}

/// How often each node prunes the journal.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Journal keys are read this many at a time.
const PAGE: usize = crate::PAGE;

/// Deletions are written this many to a transaction (under etcd's operation limit).
const DELETES_PER_TXN: usize = 100;

/// Which entries of a journal listing to answer with, in order of revision.
#[derive(Clone, Debug, Default)]
pub struct JournalWindow {
    /// Only these records (all when empty).
    pub records: Vec<String>,
    /// Only entries with these ids (revisions; all when empty).
    pub ids: Vec<Revision>,
    pub newest_first: bool,
    pub offset: usize,
    pub limit: usize,
}

impl Registry {
    /// One window of the application journal (flow's `/applications/versions`).
    pub async fn app_journal(
        &self,
        window: &JournalWindow,
    ) -> Result<Vec<HistoryEntry<berth_domain::catalog::Application>>> {
        self.journal_window("apps", window, super::records::decode_app)
            .await
    }

    /// One window of the kind journal (flow's `/services/versions`).
    pub async fn kind_journal(
        &self,
        window: &JournalWindow,
    ) -> Result<Vec<HistoryEntry<super::StoredKind>>> {
        self.journal_window("kinds", window, super::records::decode_kind)
            .await
    }

    /// Reads the journal of `collection` page by page at one revision, keeping only the
    /// `offset + limit` entries that sort first, and decodes only those it answers with.
    pub(super) async fn journal_window<T>(
        &self,
        collection: &str,
        window: &JournalWindow,
        decode: impl Fn(&str, &[u8]) -> std::result::Result<T, String>,
    ) -> Result<Vec<HistoryEntry<T>>> {
        let wanted = window.offset.saturating_add(window.limit);
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let collection_prefix = keys::journal_collection(collection);
        let prefixes: Vec<String> = if window.records.is_empty() {
            vec![collection_prefix.clone()]
        } else {
            window
                .records
                .iter()
                .filter(|name| !name.is_empty() && !name.contains('/'))
                .map(|name| keys::journal_prefix(collection, name))
                .collect()
        };
        // A max-heap on the sort key: the entry to drop first (the one that sorts last) is on top.
        let mut kept: BinaryHeap<Ranked> = BinaryHeap::new();
        let mut at = None;
        for prefix in prefixes {
            at = Some(
                self.store()
                    .for_each_page(prefix.into(), PAGE, at, |kvs| {
                        for kv in kvs {
                            let revision = kv.create_revision;
                            if !window.ids.is_empty() && !window.ids.contains(&revision) {
                                continue;
                            }
                            let sort_key = if window.newest_first {
                                -revision.0
                            } else {
                                revision.0
                            };
                            kept.push(Ranked { sort_key, kv });
                            if kept.len() > wanted {
                                kept.pop();
                            }
                        }
                    })
                    .await?,
            );
        }
        let selected: Vec<KeyValue> = kept
            .into_sorted_vec()
            .into_iter()
            .skip(window.offset)
            .map(|ranked| ranked.kv)
            .collect();
        selected
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(&kv.key);
                let name = key
                    .strip_prefix(&collection_prefix)
                    .and_then(|rest| rest.split('/').next())
                    .unwrap_or_default();
                let (change, timestamp, record) =
                    decode_journal(&kv.value).map_err(RegistryError::Internal)?;
                Ok(HistoryEntry {
                    revision: kv.create_revision,
                    timestamp,
                    change,
                    record: decode(name, &record).map_err(RegistryError::Internal)?,
                })
            })
            .collect()
    }

    /// Deletes the journal entries past the retention: all but the newest `per_record` of each
    /// record, and those older than `max_age` except each record's newest. Returns how many
    /// were deleted.
    pub async fn prune_journal(&self) -> Result<usize> {
        let retention = self.inner.config.journal;
        if retention.per_record == 0 && retention.max_age.is_none() {
            return Ok(0);
        }
        let now_millis = self.now().millis();
        let oldest_kept_millis = retention
            .max_age
            .map(|age| now_millis.saturating_sub(age.as_millis() as u64));
        let mut doomed: Vec<Bytes> = Vec::new();
        let mut record: Option<String> = None;
        // The current record's entries, oldest first: (key, wall time).
        let mut entries: Vec<(Bytes, u64)> = Vec::new();
        let judge = |entries: &mut Vec<(Bytes, u64)>, doomed: &mut Vec<Bytes>| {
            let count = entries.len();
            for (index, (key, millis)) in entries.drain(..).enumerate() {
                let newer = count - index - 1;
                let too_many = retention.per_record > 0 && newer >= retention.per_record;
                let too_old = newer > 0 && oldest_kept_millis.is_some_and(|oldest| millis < oldest);
                if too_many || too_old {
                    doomed.push(key);
                }
            }
        };
        self.store()
            .for_each_page(keys::JOURNAL.into(), PAGE, None, |kvs| {
                for kv in kvs {
                    let Some((owner, millis)) = journal_entry_owner(&kv.key) else {
                        continue;
                    };
                    if record.as_deref() != Some(owner.as_str()) {
                        judge(&mut entries, &mut doomed);
                        record = Some(owner);
                    }
                    entries.push((kv.key, millis));
                }
            })
            .await?;
        judge(&mut entries, &mut doomed);
        let deleted = doomed.len();
        for chunk in doomed.chunks(DELETES_PER_TXN) {
            let ops = chunk.iter().cloned().map(TxnOp::delete).collect();
            self.store().txn(Txn::new().and_then(ops)).await?;
        }
        if deleted > 0 {
            metrics::counter!("berth_catalog_journal_pruned_total").increment(deleted as u64);
            tracing::debug!(deleted, "pruned the catalog journal");
        }
        Ok(deleted)
    }
}

/// A journal key's record (`{collection}/{name}`) and wall time in milliseconds: keys of one
/// record are adjacent and sort by time.
fn journal_entry_owner(key: &[u8]) -> Option<(String, u64)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(keys::JOURNAL)?;
    let (owner, unique) = rest.rsplit_once('/')?;
    let millis = unique.split('-').next()?.parse().ok()?;
    Some((owner.to_string(), millis))
}

/// A journal entry and where it sorts in a listing (compared by that alone).
struct Ranked {
    sort_key: i64,
    kv: KeyValue,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.sort_key == other.sort_key
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key.cmp(&other.sort_key)
    }
}

#[cfg(test)]
mod tests {
    use super::journal_entry_owner;

    #[test]
    fn a_journal_key_names_its_record_and_time() {
        let key = crate::keys::journal_key("apps", "web", 1_700_000_000_123);
        assert_eq!(
            journal_entry_owner(&key),
            Some(("apps/web".to_string(), 1_700_000_000_123))
        );
        assert_eq!(journal_entry_owner(b"/berth/journal/apps"), None);
        assert_eq!(journal_entry_owner(b"/elsewhere/apps/web/1-2-3"), None);
    }
}
