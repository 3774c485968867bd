//! The journal: everything the node wants remembered (activity, session history,
//! last seen, room statistics) goes through one bounded queue to one writer task
//! that writes batches in transactions. Recording never waits: a full queue drops
//! the row, counts it and warns, so a slow or absent database can't stall presence.
//! While the database is down the writer keeps its current batch and retries with
//! back-off; the queue absorbs what comes meanwhile, up to its bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::store::{Store, WriteOp};

#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<WriteOp>,
    dropped: Arc<AtomicU64>,
    /// Rows the writer has taken from the queue and not yet written.
    in_flight: Arc<AtomicU64>,
}

/// Batching and queue settings (`database.*`).
#[derive(Debug, Clone, Copy)]
pub struct JournalSettings {
    pub queue_size: usize,
    pub batch_size: usize,
    pub batch_interval: Duration,
    /// A batch write taking longer than this is abandoned (rolled back) and
    /// retried: a write stuck on a lock or a dead connection must not stall
    /// the journal silently.
    pub write_timeout: Duration,
}

impl Journal {
    pub fn new(settings: JournalSettings, store: Arc<dyn Store>) -> (Journal, JournalWriter) {
        let (tx, rx) = mpsc::channel(settings.queue_size);
        let in_flight = Arc::new(AtomicU64::new(0));
        let journal = Journal {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            in_flight: in_flight.clone(),
        };
        let writer = JournalWriter {
            rx,
            store,
            settings,
            pending: Vec::with_capacity(settings.batch_size),
            in_flight,
        };
        (journal, writer)
    }

    /// Queues one write; never waits.
    pub fn record(&self, op: WriteOp) {
        match self.tx.try_send(op) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(m::JOURNAL_DROPPED).increment(1);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // One warning per 1,000 drops: loud enough, never a log flood.
                if n % 1000 == 1 {
                    tracing::warn!(
                        dropped_so_far = n,
                        "journal queue full: dropping activity rows (database down or slow?)"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Rows waiting: in the queue, plus the batch the writer holds.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
            + self.in_flight.load(Ordering::Relaxed) as usize
    }
}

pub struct JournalWriter {
    rx: mpsc::Receiver<WriteOp>,
    store: Arc<dyn Store>,
    settings: JournalSettings,
    /// The batch being written; kept across failed attempts.
    pending: Vec<WriteOp>,
    in_flight: Arc<AtomicU64>,
}

impl JournalWriter {
    /// Writes batches until `stop`, then flushes what is queued (bounded by
    /// `flush_for`) and returns the number of rows that could not be written.
    pub async fn run(mut self, stop: CancellationToken, flush_for: Duration) -> usize {
        let mut backoff = Duration::from_millis(250);
        loop {
            // Fill the batch: up to batch_size, or whatever came within the interval.
            if self.pending.len() < self.settings.batch_size {
                let deadline = tokio::time::Instant::now() + self.settings.batch_interval;
                while self.pending.len() < self.settings.batch_size {
                    tokio::select! {
                        op = self.rx.recv() => match op {
                            Some(op) => self.pending.push(op),
                            None => return self.finish(flush_for).await,
                        },
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = stop.cancelled() => return self.finish(flush_for).await,
                    }
                }
            }
            self.in_flight
                .store(self.pending.len() as u64, Ordering::Relaxed);
            let queued = self.rx.max_capacity() - self.rx.capacity();
            metrics::gauge!(m::JOURNAL_QUEUE).set((queued + self.pending.len()) as f64);
            if self.pending.is_empty() {
                continue;
            }
            if self.write().await {
                backoff = Duration::from_millis(250);
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return self.finish(flush_for).await,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    async fn write(&mut self) -> bool {
        let started = std::time::Instant::now();
        let write = self.store.write_batch(&self.pending);
        let result = match tokio::time::timeout(self.settings.write_timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(crate::store::StoreError::Unavailable(format!(
                "batch write took longer than {:?}",
                self.settings.write_timeout
            ))),
        };
        match result {
            Ok(()) => {
                metrics::counter!(m::JOURNAL_WRITTEN).increment(self.pending.len() as u64);
                metrics::histogram!(m::JOURNAL_BATCH_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                self.pending.clear();
                self.in_flight.store(0, Ordering::Relaxed);
                true
            }
            Err(e) if e.is_retryable() => {
                metrics::counter!(m::JOURNAL_WRITE_ERRORS).increment(1);
                tracing::warn!(
                    rows = self.pending.len(),
                    "journal write failed, will retry: {e}"
                );
                false
            }
            Err(e) => {
                // The data itself is refused: retrying the batch would fail forever.
                // Write the rows one by one and drop (and count) only the bad ones.
                metrics::counter!(m::JOURNAL_WRITE_ERRORS).increment(1);
                tracing::error!(
                    rows = self.pending.len(),
                    "journal batch refused, writing rows singly: {e}"
                );
                let rows = std::mem::take(&mut self.pending);
                for (i, op) in rows.iter().enumerate() {
                    let one = self.store.write_batch(std::slice::from_ref(op));
                    let result = tokio::time::timeout(self.settings.write_timeout, one)
                        .await
                        .unwrap_or_else(|_| {
                            Err(crate::store::StoreError::Unavailable(
                                "row write timed out".into(),
                            ))
                        });
                    match result {
                        Ok(()) => metrics::counter!(m::JOURNAL_WRITTEN).increment(1),
                        Err(e) if e.is_retryable() => {
                            // The database went away meanwhile: keep the rest.
                            self.pending = rows[i..].to_vec();
                            return false;
                        }
                        Err(e) => {
                            metrics::counter!(m::JOURNAL_DROPPED).increment(1);
                            tracing::error!(
                                "journal row dropped, the database refuses it: {e}: {op:?}"
                            );
                        }
                    }
                }
                self.in_flight.store(0, Ordering::Relaxed);
                true
            }
        }
    }

    /// Clean shutdown: write everything queued, retrying until `flush_for` runs out.
    async fn finish(mut self, flush_for: Duration) -> usize {
        self.rx.close();
        let deadline = tokio::time::Instant::now() + flush_for;
        loop {
            while self.pending.len() < self.settings.batch_size {
                match self.rx.try_recv() {
                    Ok(op) => self.pending.push(op),
                    Err(_) => break,
                }
            }
            if self.pending.is_empty() {
                return 0;
            }
            if !self.write().await {
                if tokio::time::Instant::now() >= deadline {
                    let mut lost = self.pending.len();
                    while self.rx.try_recv().is_ok() {
                        lost += 1;
                    }
                    tracing::error!(
                        rows = lost,
                        "journal: database unavailable at shutdown; rows lost"
                    );
                    return lost;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
