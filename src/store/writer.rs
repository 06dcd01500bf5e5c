//! The group-commit writer: one thread, one LMDB write transaction per batch.
//!
//! Invariants:
//! - a request's change and its audit event are committed in the same transaction;
//!   a refused change is rolled back (nested transaction) but its event is still written;
//! - a request is answered only after the transaction holding its event is durable
//!   (LMDB commit = fsync);
//! - the chain head in memory advances only after a successful commit;
//! - every job is answered: if the batch's transaction cannot begin or commit, each job
//!   gets `Failed` with the same typed reason ([`BatchFailure`]);
//! - event timestamps come from the injected [`Clock`].

use std::sync::Arc;
use std::time::Instant;

use lmdb::{Environment, RwTransaction, Transaction, WriteFlags};
use tokio::sync::{mpsc, oneshot};

use super::layout;
use super::write::{ChangeError, WriteTxn};
use super::{BatchFailure, Dbs, StoreError};
use crate::audit::{action_name, chain_hash, hash_hex, AuditEvent, ChainHash, Outcome, PendingEvent, GENESIS_PREV};
use crate::clock::{rfc3339, Clock};
use crate::telemetry::Metrics;

/// Where an event landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventReceipt {
    /// Sequence number.
    pub seq: u64,
    /// `evt-<hex>`.
    pub event_id: String,
    /// Its chain hash.
    pub chain_hash: ChainHash,
    /// Its timestamp (RFC 3339).
    pub ts: String,
}

/// A durable change and its event.
#[derive(Debug)]
pub struct Committed<R> {
    /// What the change returned.
    pub value: R,
    /// The event committed with it.
    pub event: EventReceipt,
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The change refused; its event (outcome `failed`) is durable.
    #[error("{0}")]
    Refused(ChangeError, EventReceipt),
    /// The entity's key changed concurrently; nothing was written, retry.
    #[error("data key changed concurrently")]
    StaleKey,
    /// The transaction failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Applied {
    Kept,
    Refused,
    Retry,
}

/// What the writer tells a request once its batch is done.
enum Delivery {
    /// The event (and the change, if kept) is durable.
    Durable(EventReceipt),
    /// Nothing was written for this request (retry requested).
    NotWritten,
    /// The batch failed.
    Failed(StoreError),
}

type Finisher = Box<dyn FnOnce(Delivery) + Send>;
/// `None` = the batch already failed: do not apply, only hand back the finisher.
type Change = Box<dyn FnOnce(Option<(&mut WriteTxn<'_, '_>, &mut PendingEvent)>) -> (Applied, Finisher) + Send>;

struct Job {
    event: PendingEvent,
    change: Change,
}

/// Handle to the writer thread.
#[derive(Clone)]
pub(super) struct WriterHandle {
    jobs: mpsc::UnboundedSender<Job>,
}

/// Upper bound on requests per transaction (bounds latency of one batch).
const MAX_BATCH: usize = 1024;

fn make_job<R, F>(event: PendingEvent, change: F) -> (Job, oneshot::Receiver<Result<Committed<R>, CommitError>>)
where
    R: Send + 'static,
    F: FnOnce(&mut WriteTxn<'_, '_>, &mut PendingEvent) -> Result<R, ChangeError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let change: Change = Box::new(move |target| {
        let result = target.map(|(txn, event)| {
            let result = change(txn, event);
            if let Err(e) = &result {
                if !matches!(e, ChangeError::StaleKey) {
                    event.outcome = Outcome::Failed;
                    event.details.insert("error".into(), e.code().into());
                }
            }
            result
        });
        let applied = match &result {
            Some(Ok(_)) | None => Applied::Kept,
            Some(Err(ChangeError::StaleKey)) => Applied::Retry,
            Some(Err(_)) => Applied::Refused,
        };
        let finish: Finisher = Box::new(move |delivery| {
            let reply = match (delivery, result) {
                (Delivery::Durable(event), Some(Ok(value))) => Ok(Committed { value, event }),
                (Delivery::Durable(event), Some(Err(e))) => Err(CommitError::Refused(e, event)),
                (Delivery::NotWritten, Some(Err(ChangeError::StaleKey))) => Err(CommitError::StaleKey),
                (Delivery::Failed(e), _) => Err(CommitError::Store(e)),
                _ => Err(CommitError::Store(StoreError::WriterGone)),
            };
            let _ = tx.send(reply);
        });
        (applied, finish)
    });
    (Job { event, change }, rx)
}

impl WriterHandle {
    pub(super) fn start(
        env: Arc<Environment>,
        dbs: Dbs,
        head: (u64, ChainHash),
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let (jobs, inbox) = mpsc::unbounded_channel();
        let mut writer = Writer {
            env,
            dbs,
            next_seq: head.0,
            last_hash: head.1,
            metrics,
            clock,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(inbox))?;
        Ok(Self { jobs })
    }

    pub(super) async fn commit<R, F>(&self, event: PendingEvent, change: F) -> Result<Committed<R>, CommitError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_, '_>, &mut PendingEvent) -> Result<R, ChangeError> + Send + 'static,
    {
        let (job, rx) = make_job(event, change);
        self.jobs.send(job).map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub(super) fn commit_blocking<R, F>(&self, event: PendingEvent, change: F) -> Result<Committed<R>, CommitError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteTxn<'_, '_>, &mut PendingEvent) -> Result<R, ChangeError> + Send + 'static,
    {
        let (job, rx) = make_job(event, change);
        self.jobs.send(job).map_err(|_| StoreError::WriterGone)?;
        rx.blocking_recv().map_err(|_| StoreError::WriterGone)?
    }
}

struct Writer {
    env: Arc<Environment>,
    dbs: Dbs,
    next_seq: u64,
    last_hash: ChainHash,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl Writer {
    fn run(&mut self, mut inbox: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = inbox.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match inbox.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, batch: Vec<Job>) {
        self.metrics.commit_batch_size.observe(batch.len() as f64);
        let mut txn = match self.env.begin_rw_txn() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot begin write transaction; batch not committed");
                let reason = BatchFailure::Lmdb(e);
                for job in batch {
                    let (_, finish) = (job.change)(None);
                    finish(Delivery::Failed(StoreError::Commit(reason)));
                }
                return;
            }
        };
        let (mut seq, mut prev) = (self.next_seq, self.last_hash);
        let mut finished: Vec<(Finisher, Option<EventReceipt>)> = Vec::with_capacity(batch.len());
        let mut failure = None;
        for job in batch {
            if failure.is_some() {
                // The batch is already lost; collect the rest's finishers unapplied.
                let (_, finish) = (job.change)(None);
                finished.push((finish, None));
                continue;
            }
            match self.apply(&mut txn, job, seq, prev) {
                Ok((finish, Some(receipt))) => {
                    seq += 1;
                    prev = receipt.chain_hash;
                    finished.push((finish, Some(receipt)));
                }
                Ok((finish, None)) => finished.push((finish, None)),
                Err((finish, e)) => {
                    finished.push((finish, None));
                    failure = Some(e);
                }
            }
        }
        let result = match failure {
            Some(e) => {
                txn.abort();
                Err(e)
            }
            None => self.finish_txn(txn, seq, prev),
        };
        match result {
            Ok(()) => {
                self.metrics.audit_events.inc_by(seq - self.next_seq);
                self.next_seq = seq;
                self.last_hash = prev;
                for (finish, receipt) in finished {
                    finish(receipt.map_or(Delivery::NotWritten, Delivery::Durable));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write transaction failed; batch not committed");
                let reason = BatchFailure::from(&e);
                for (finish, _) in finished {
                    finish(Delivery::Failed(StoreError::Commit(reason)));
                }
            }
        }
    }

    fn finish_txn(&self, mut txn: RwTransaction<'_>, seq: u64, prev: ChainHash) -> Result<(), StoreError> {
        let mut head = Vec::with_capacity(40);
        head.extend_from_slice(&seq.to_be_bytes());
        head.extend_from_slice(&prev);
        txn.put(self.dbs.meta, &layout::META_AUDIT_HEAD, &head, WriteFlags::empty())?;
        let started = Instant::now();
        txn.commit()?;
        self.metrics.commit_duration.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Append the event and its index entries (time, action, tenant).
    fn put_event(
        &self,
        txn: &mut RwTransaction<'_>,
        e: &AuditEvent,
        unix_secs: i64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let none: &[u8] = &[];
        txn.put(self.dbs.audit, &layout::audit_key(e.seq), &bytes, WriteFlags::APPEND)?;
        let secs = u64::try_from(unix_secs).unwrap_or(0);
        txn.put(
            self.dbs.audit_by_time,
            &layout::audit_time_key(secs, e.seq),
            &none,
            WriteFlags::empty(),
        )?;
        let mut k = layout::audit_action_prefix(action_name(e.action));
        k.extend_from_slice(&e.seq.to_be_bytes());
        txn.put(self.dbs.audit_by_action, &k, &none, WriteFlags::empty())?;
        if let Some(t) = &e.tenant_id {
            let mut k = layout::audit_tenant_prefix(t);
            k.extend_from_slice(&e.seq.to_be_bytes());
            txn.put(self.dbs.audit_by_tenant, &k, &none, WriteFlags::empty())?;
        }
        Ok(())
    }

    /// Apply one job's change in a nested transaction and append its event.
    /// `Ok((finish, None))` = retry requested, nothing written.
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        txn: &mut RwTransaction<'_>,
        job: Job,
        seq: u64,
        prev: ChainHash,
    ) -> Result<(Finisher, Option<EventReceipt>), (Finisher, StoreError)> {
        let Job { mut event, change } = job;
        let mut nested = match txn.begin_nested_txn() {
            Ok(n) => n,
            Err(e) => return Err(((change)(None).1, e.into())),
        };
        let (applied, finish) = change(Some((&mut WriteTxn::new(&mut nested, &self.dbs), &mut event)));
        match applied {
            Applied::Kept => {
                if let Err(e) = nested.commit() {
                    return Err((finish, e.into()));
                }
            }
            Applied::Refused => nested.abort(),
            Applied::Retry => {
                nested.abort();
                return Ok((finish, None));
            }
        }
        let now = self.clock.now();
        let chained = AuditEvent {
            seq,
            prev: if seq == 0 {
                GENESIS_PREV.to_owned()
            } else {
                hash_hex(&prev)
            },
            ts: rfc3339(now.replace_nanosecond(0).unwrap_or(now)),
            event_id: event.event_id,
            action: event.action,
            actor: event.actor,
            tenant_id: event.tenant_id.map(String::from),
            resource: event.resource,
            outcome: event.outcome,
            request_id: event.request_id,
            details: event.details,
        };
        let bytes = chained.to_bytes();
        let hash = chain_hash(&bytes);
        if let Err(e) = self.put_event(txn, &chained, now.unix_timestamp(), &bytes) {
            return Err((finish, e));
        }
        Ok((
            finish,
            Some(EventReceipt {
                seq,
                event_id: chained.event_id,
                chain_hash: hash,
                ts: chained.ts,
            }),
        ))
    }
}
