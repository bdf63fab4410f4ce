//! A durable record log: records of bytes keyed by an increasing sequence number, in one
//! redb file, written with group commit.
//!
//! One writer thread owns every write. It takes every operation waiting at that moment
//! (up to [`MAX_BATCH`]) into one write transaction and commits it with fsync
//! (`Durability::Immediate`), then answers each caller. So [`RecordLog::append`] returns
//! only once its record is durable, and many concurrent appends share one fsync.
//! Sequence numbers are assigned in commit order and never reused, across restarts too.
//!
//! [`RecordLog::open`] returns the records already in the file, in sequence order, so the
//! owner can rebuild its in-memory index. One process at a time: redb locks the file.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// Most operations one group commit takes.
pub const MAX_BATCH: usize = 4096;

/// Storage failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// redb or the file system failed; the operation did not happen.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The log is closed.
    #[error("the log is closed")]
    Closed,
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

enum Op {
    Append(Vec<u8>, oneshot::Sender<Result<u64, StoreError>>),
    Remove(u64, oneshot::Sender<Result<(), StoreError>>),
}

/// The log. Dropping the last handle lets the writer finish its batch and stop.
#[derive(Debug)]
pub struct RecordLog {
    db: Arc<Database>,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for RecordLog {
    fn drop(&mut self) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

/// Records already in a log when it was opened: `(seq, bytes)` in sequence order.
pub type Existing = Vec<(u64, Vec<u8>)>;

impl RecordLog {
    /// Opens (or creates) the log at `path`; returns it with the records it holds.
    pub fn open(path: &Path) -> Result<(RecordLog, Existing), StoreError> {
        let db = Arc::new(Database::create(path).map_err(storage)?);
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(RECORDS).map_err(storage)?; // create on first open
        txn.commit().map_err(storage)?;
        let mut existing = Vec::new();
        {
            let read = db.begin_read().map_err(storage)?;
            let table = read.open_table(RECORDS).map_err(storage)?;
            for item in table.iter().map_err(storage)? {
                let (seq, bytes) = item.map_err(storage)?;
                existing.push((seq.value(), bytes.value().to_vec()));
            }
        }
        let next_seq = existing.last().map_or(1, |(s, _)| s + 1);
        let (tx, rx) = mpsc::channel();
        let writer = {
            let db = Arc::clone(&db);
            std::thread::Builder::new()
                .name("record-log-writer".into())
                .spawn(move || write_loop(&db, &rx, next_seq))
                .map_err(storage)?
        };
        let log = RecordLog {
            db,
            ops: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        };
        Ok((log, existing))
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.as_ref()
            .ok_or(StoreError::Closed)?
            .send(op)
            .map_err(|_| StoreError::Closed)
    }

    /// Appends a record; returns its sequence number once it is durable.
    pub async fn append(&self, record: Vec<u8>) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Append(record, reply))?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Removes a record (durably; removing a missing record is not an error).
    pub async fn remove(&self, seq: u64) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Remove(seq, reply))?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Reads a record.
    pub fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db.begin_read().map_err(storage)?;
        let table = read.open_table(RECORDS).map_err(storage)?;
        Ok(table.get(seq).map_err(storage)?.map(|v| v.value().to_vec()))
    }
}

fn write_loop(db: &Database, rx: &mpsc::Receiver<Op>, mut next_seq: u64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let first_seq = next_seq;
        let committed = (|| -> Result<u64, StoreError> {
            let txn = db.begin_write().map_err(storage)?;
            let mut seq = first_seq;
            {
                let mut table = txn.open_table(RECORDS).map_err(storage)?;
                for op in &batch {
                    match op {
                        Op::Append(bytes, _) => {
                            table.insert(seq, bytes.as_slice()).map_err(storage)?;
                            seq += 1;
                        }
                        Op::Remove(s, _) => {
                            table.remove(*s).map_err(storage)?;
                        }
                    }
                }
            }
            txn.commit().map_err(storage)?;
            Ok(seq)
        })();
        let mut seq = first_seq;
        if let Ok(next) = committed {
            next_seq = next;
        }
        for op in batch {
            match op {
                Op::Append(_, reply) => {
                    let _ = reply.send(committed.as_ref().map(|_| seq).map_err(Clone::clone));
                    seq += 1;
                }
                Op::Remove(_, reply) => {
                    let _ = reply.send(committed.as_ref().map(|_| ()).map_err(Clone::clone));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_survive_a_reopen_and_sequences_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let (log, existing) = RecordLog::open(&path).unwrap();
            assert!(existing.is_empty());
            let log = Arc::new(log);
            let tasks: Vec<_> = (0..50u8)
                .map(|i| {
                    let log = Arc::clone(&log);
                    tokio::spawn(async move { log.append(vec![i]).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            log.remove(1).await.unwrap();
            assert_eq!(log.get(2).unwrap().map(|v| v.len()), Some(1));
        }
        let (log, existing) = RecordLog::open(&path).unwrap();
        assert_eq!(existing.len(), 49);
        assert!(existing.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(log.append(vec![9]).await.unwrap(), 51);
    }
}
