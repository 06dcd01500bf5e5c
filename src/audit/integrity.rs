//! Integrity of the audit log over time: sealing checkpoints to the TPM counter, the
//! start-up rollback check, the background verifier, and the integrity alarm.
//!
//! Sealing protocol (SPEC §7): commit a checkpoint carrying counter `c+1` (with its
//! `checkpoint_seal` event), *then* increment the TPM NV counter. At start, with `S` the
//! newest stored checkpoint's counter and `T` the TPM's: `S == T` ok; `S == T+1` finish
//! the increment (crash between the two steps); anything else is a rollback or a
//! replaced anchor. Invariants: nothing is sealed past a verification failure; once
//! raised, the alarm stays raised for the life of the process unless a governed
//! `acknowledge_alarm` re-anchors a *rollback* ([`Integrity::acknowledge_rollback`]: full
//! sweep, then a checkpoint at TPM + 1 under the seal lock); a chain verification
//! failure is never acknowledged. The alarm state is typed ([`AlarmKind`] + reason, each
//! kind recording its own audit action); failures are [`IntegrityError`]s whose texts are
//! the messages logged and stored as proposal results.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use strongroom_hsm::{HsmWorker, KeyBackend, MonotonicCounter};

use super::checkpoint::{verifier_key, Checkpoint};
use super::verifier::{ChainVerifier, VerifiedPrefix};
use super::{Action, Outcome, PendingEvent};
use crate::auth::system_scope;
use crate::store::Store;

/// The TPM counter's worker.
pub type CounterWorker = HsmWorker<dyn MonotonicCounter>;

/// Full sweeps run on every verification pass while the log is at most this long, and
/// every [`FULL_SWEEP_EVERY`] passes beyond (a sweep costs ~1 s per million events).
pub const FULL_SWEEP_MAX_EVENTS: u64 = 1_000_000;
/// See [`FULL_SWEEP_MAX_EVENTS`].
pub const FULL_SWEEP_EVERY: u64 = 30;

/// What kind of detection raised the alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKind {
    /// Stored checkpoints and the TPM counter disagree (restored copy, removed
    /// checkpoints, replaced TPM, or a counter that cannot be read).
    Rollback,
    /// The audit chain or a checkpoint does not verify (never acknowledged).
    ChainVerification,
}

impl AlarmKind {
    /// The audit action that records the detection.
    pub fn action(self) -> Action {
        match self {
            AlarmKind::Rollback => Action::RollbackDetected,
            AlarmKind::ChainVerification => Action::ChainVerifyFailed,
        }
    }
}

/// A raised alarm: its kind and the reason shown to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmState {
    /// The kind of detection.
    pub kind: AlarmKind,
    /// Why (answered by data endpoints and `/readyz`).
    pub reason: String,
}

/// Why an integrity operation did not complete. The `Display` texts are the messages
/// logged, stored as proposal results and printed by `init`, unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// No TPM counter worker.
    #[error("TPM counter unavailable")]
    TpmUnavailable,
    /// The TPM or HSM worker, or the verifier task, failed.
    #[error("{0}")]
    Hardware(String),
    /// The audit log or checkpoints could not be read.
    #[error("{0}")]
    Read(String),
    /// The chain does not verify (the alarm is raised).
    #[error("{0}")]
    Chain(String),
    /// An alarm was raised (start-up check, counter mismatch).
    #[error("{}", .0.reason)]
    Alarm(AlarmState),
    /// Sealing refused while the alarm is raised.
    #[error("not sealing under an integrity alarm: {0}")]
    Alarmed(String),
    /// The HSM refused to sign.
    #[error("HSM signing failed: {0}")]
    Signing(String),
    /// The checkpoint commit failed.
    #[error("cannot store checkpoint {counter}: {reason}")]
    StoreCheckpoint {
        /// Counter of the checkpoint.
        counter: u64,
        /// Why.
        reason: String,
    },
    /// The TPM increment failed.
    #[error("TPM increment to {counter} failed: {source}")]
    Increment {
        /// Target counter.
        counter: u64,
        /// Why.
        source: Box<IntegrityError>,
    },
    /// `acknowledge_alarm` of a chain verification failure.
    #[error(
        "the alarm is an audit chain verification failure ({0}); it cannot be acknowledged in this version: restore the newest good copy of the data directory"
    )]
    ChainNotAcknowledgeable(String),
    /// `acknowledge_alarm` without a readable TPM.
    #[error("cannot acknowledge: the TPM counter cannot be read ({0})")]
    AcknowledgeTpm(Box<IntegrityError>),
    /// `acknowledge_alarm` without a readable audit log.
    #[error("cannot acknowledge: the audit log cannot be read ({0})")]
    AcknowledgeLog(String),
    /// `acknowledge_alarm` without readable checkpoints.
    #[error("cannot acknowledge: {0}")]
    AcknowledgeStore(String),
    /// `acknowledge_alarm` with checkpoints ahead of the TPM.
    #[error(
        "cannot acknowledge: the stored checkpoints (counter {stored}) are ahead of the TPM ({tpm}); the TPM or its NV index was replaced, which this version cannot re-anchor"
    )]
    AcknowledgeAhead {
        /// Newest stored counter.
        stored: u64,
        /// TPM counter.
        tpm: u64,
    },
}

/// The integrity alarm shared with the API: set once; cleared in-process only by the
/// governed `acknowledge_alarm` operation ([`Integrity::acknowledge_rollback`]).
#[derive(Clone)]
pub struct Alarm {
    /// The detection's kind and reason, when raised.
    reason: Arc<RwLock<Option<AlarmState>>>,
    gauge: IntGauge,
}

impl Alarm {
    /// A clear alarm driving `gauge`.
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(0);
        Self {
            reason: Arc::default(),
            gauge,
        }
    }
    /// The reason, when raised.
    pub fn reason(&self) -> Option<String> {
        self.state().map(|s| s.reason)
    }
    /// The kind of detection, when raised.
    pub fn kind(&self) -> Option<AlarmKind> {
        self.state().map(|s| s.kind)
    }
    /// The kind and reason, when raised.
    pub fn state(&self) -> Option<AlarmState> {
        self.reason
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
    /// Raise; returns false if it was already raised.
    fn raise(&self, kind: AlarmKind, why: &str) -> bool {
        let mut r = self.reason.write().unwrap_or_else(|p| p.into_inner());
        self.gauge.set(1);
        if r.is_some() {
            return false;
        }
        *r = Some(AlarmState {
            kind,
            reason: why.to_owned(),
        });
        true
    }
    /// Clear (only after the current state was re-anchored under the seal lock).
    fn clear(&self) {
        let mut r = self.reason.write().unwrap_or_else(|p| p.into_inner());
        *r = None;
        self.gauge.set(0);
    }
}

/// Sealing timings.
#[derive(Debug, Clone, Copy)]
pub struct SealPolicy {
    /// Seal on this period when there was activity.
    pub interval: Duration,
    /// At most one seal per this period for critical events (TPM wear).
    pub min_interval: Duration,
    /// Verification period.
    pub verify_interval: Duration,
}

struct SealState {
    /// The TPM counter value of the newest sealed checkpoint.
    counter: u64,
    /// Events covered by it.
    size: u64,
    last_seal: Instant,
    /// The checkpoint `counter` is committed but the TPM increment failed: finish it
    /// before anything else (the TPM is then one behind, the crash state of §7).
    increment_pending: bool,
}

/// The integrity service.
pub struct Integrity {
    store: Store,
    hsm: HsmWorker<dyn KeyBackend>,
    tpm: Option<CounterWorker>,
    verifier: Arc<ChainVerifier>,
    origin: String,
    nv_index: u32,
    public_key: [u8; 32],
    seal: tokio::sync::Mutex<SealState>,
    alarm: Alarm,
    critical: tokio::sync::Notify,
    policy: SealPolicy,
}

/// Checkpoint status for the API.
pub struct Status {
    /// The whole answer of SPEC §6's `chain_verified`.
    pub chain_verified: bool,
    /// Verified prefix.
    pub verified: VerifiedPrefix,
    /// Newest checkpoint that verified, with its note.
    pub checkpoint: Option<Checkpoint>,
    /// TPM counter now.
    pub tpm_counter: Option<u64>,
    /// Last event covered by a TPM-confirmed checkpoint.
    pub sealed_through_seq: Option<u64>,
}

/// What start-up found.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupCheck {
    /// Stored and TPM counters agree.
    Consistent,
    /// A crash between checkpoint commit and TPM increment was finished.
    FinishedIncrement,
}

impl Integrity {
    /// Build the service. `tpm` is `None` when the counter is missing or replaced (the
    /// caller raises the alarm).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        hsm: HsmWorker<dyn KeyBackend>,
        tpm: Option<CounterWorker>,
        appliance_id: &str,
        nv_index: u32,
        public_key: [u8; 32],
        alarm: Alarm,
        policy: SealPolicy,
    ) -> Arc<Self> {
        let origin = format!("strongroom/{appliance_id}");
        let verifier = Arc::new(ChainVerifier::new(store.clone(), public_key, origin.clone(), nv_index));
        Arc::new(Self {
            store,
            hsm,
            tpm,
            verifier,
            origin,
            nv_index,
            public_key,
            seal: tokio::sync::Mutex::new(SealState {
                counter: 0,
                size: 0,
                last_seal: Instant::now(),
                increment_pending: false,
            }),
            alarm,
            critical: tokio::sync::Notify::new(),
            policy,
        })
    }

    /// The alarm.
    pub fn alarm(&self) -> &Alarm {
        &self.alarm
    }

    /// The C2SP verifier key of the checkpoint signing key.
    pub fn verifier_key(&self) -> String {
        verifier_key(&self.origin, &self.public_key)
    }

    /// The verifier.
    pub fn verifier(&self) -> &ChainVerifier {
        &self.verifier
    }

    /// The newest stored checkpoint note, if any.
    pub fn latest_note(&self) -> Option<String> {
        self.store.read().ok()?.latest_checkpoint().ok()?.map(|(_, n)| n)
    }

    /// Raise the alarm and record the detection in the audit log (once).
    pub async fn raise(&self, kind: AlarmKind, reason: &str) {
        if !self.alarm.raise(kind, reason) {
            return;
        }
        tracing::error!(reason, "INTEGRITY ALARM: data endpoints now refuse service");
        let mut ev =
            PendingEvent::new(kind.action(), "system:integrity", "audit", "integrity").detail("reason", reason);
        ev.outcome = Outcome::Failed;
        if let Err(e) = self.store.record(ev).await {
            tracing::error!(error = %e, "cannot record the integrity alarm in the audit log");
        }
    }

    async fn tpm_read(&self) -> Result<u64, IntegrityError> {
        let tpm = self.tpm.as_ref().ok_or(IntegrityError::TpmUnavailable)?;
        tpm.call(|c| c.read())
            .await
            .map_err(|e| IntegrityError::Hardware(e.to_string()))?
            .map_err(|e| IntegrityError::Hardware(e.to_string()))
    }

    async fn tpm_increment(&self) -> Result<u64, IntegrityError> {
        let tpm = self.tpm.as_ref().ok_or(IntegrityError::TpmUnavailable)?;
        tpm.call(|c| c.increment())
            .await
            .map_err(|e| IntegrityError::Hardware(e.to_string()))?
            .map_err(|e| IntegrityError::Hardware(e.to_string()))
    }

    /// `init`: the TPM counter was just defined at `counter`; seal the genesis events.
    pub async fn seal_genesis(&self, counter: u64) -> Result<(), IntegrityError> {
        self.seal.lock().await.counter = counter;
        self.seal_now("genesis").await.map(|_| ())
    }

    /// `serve`: the start-up rollback check and a full verification. Raises the alarm
    /// on any inconsistency.
    pub async fn startup(&self) -> Result<StartupCheck, IntegrityError> {
        // Any failure here — including a store that cannot be read — is an alarm: a check
        // that cannot run must never count as a check that passed.
        match self.startup_checks().await {
            Ok(check) => Ok(check),
            Err(alarm) => self.refuse(alarm).await,
        }
    }

    async fn startup_checks(&self) -> Result<StartupCheck, AlarmState> {
        let rollback = |reason: String| AlarmState {
            kind: AlarmKind::Rollback,
            reason,
        };
        let tamper = |reason: String| AlarmState {
            kind: AlarmKind::ChainVerification,
            reason,
        };
        let latest = self
            .store
            .read()
            .and_then(|t| t.latest_checkpoint())
            .map_err(|e| tamper(format!("cannot read the newest checkpoint: {e}")))?;
        let Some((stored, note)) = latest else {
            return Err(rollback("no sealed checkpoint in the data directory".into()));
        };
        // Trust the stored counter only if the note under it is ours and says so: a junk
        // entry must not make us advance the TPM.
        match Checkpoint::parse_verified(&note, &self.public_key) {
            Ok(cp) if cp.counter == stored && cp.origin == self.origin && cp.nv_index == self.nv_index => {}
            Ok(_) => {
                return Err(tamper(format!(
                    "checkpoint {stored} does not match its key, origin or TPM index"
                )))
            }
            Err(e) => return Err(tamper(format!("checkpoint {stored}: {e}"))),
        }
        let tpm = self
            .tpm_read()
            .await
            .map_err(|e| rollback(format!("TPM counter check failed: {e}")))?;
        let outcome = if stored == tpm {
            StartupCheck::Consistent
        } else if stored == tpm + 1 {
            tracing::warn!(stored, tpm, "finishing a TPM increment interrupted by a crash");
            self.tpm_increment()
                .await
                .map_err(|e| rollback(format!("cannot finish the TPM increment: {e}")))?;
            StartupCheck::FinishedIncrement
        } else if stored < tpm {
            return Err(rollback(format!(
                "rollback detected: the newest checkpoint is sealed to TPM counter {stored} but the TPM is at {tpm} (an older copy of the data directory was restored, or checkpoints were removed)"
            )));
        } else {
            return Err(rollback(format!(
                "TPM anchor mismatch: stored counter {stored} is ahead of the TPM ({tpm}); the TPM or its NV index was replaced"
            )));
        };
        let verifier = self.verifier.clone();
        let sweep = tokio::task::spawn_blocking(move || verifier.full_sweep())
            .await
            .map_err(|e| tamper(format!("verifier task failed: {e}")))?
            .map_err(|e| tamper(format!("cannot read the audit log: {e}")))?;
        let prefix = sweep.map_err(|f| tamper(f.to_string()))?;
        let mut st = self.seal.lock().await;
        st.counter = stored;
        st.size = self.verifier.latest_checkpoint().map_or(0, |(_, cp)| cp.size);
        tracing::info!(events = prefix.size, counter = stored, "audit chain verified at start");
        Ok(outcome)
    }

    async fn refuse(&self, alarm: AlarmState) -> Result<StartupCheck, IntegrityError> {
        self.raise(alarm.kind, &alarm.reason).await;
        Err(IntegrityError::Alarm(alarm))
    }

    /// Seal now if there was activity since the last checkpoint (beyond its own
    /// `checkpoint_seal` event).
    pub async fn seal_if_active(&self, reason: &str) -> Result<Option<u64>, IntegrityError> {
        let head = self
            .store
            .audit_head()
            .map_err(|e| IntegrityError::Read(e.to_string()))?
            .0;
        let sealed = self.seal.lock().await.size;
        if head <= sealed + 1 {
            return Ok(None);
        }
        self.seal_now(reason).await
    }

    /// Seal the verified prefix: sign in the HSM, commit with its event, bump the TPM.
    pub async fn seal_now(&self, reason: &str) -> Result<Option<u64>, IntegrityError> {
        let mut st = self.seal.lock().await;
        if let Some(why) = self.alarm.reason() {
            return Err(IntegrityError::Alarmed(why));
        }
        if st.increment_pending {
            self.finish_increment(st.counter).await?;
            st.increment_pending = false;
        }
        let verifier = self.verifier.clone();
        let prefix = tokio::task::spawn_blocking(move || verifier.verify_new())
            .await
            .map_err(|e| IntegrityError::Hardware(e.to_string()))?
            .map_err(|e| IntegrityError::Read(e.to_string()))?;
        let prefix = match prefix {
            Ok(p) => p,
            Err(f) => {
                self.raise(AlarmKind::ChainVerification, &f.to_string()).await;
                return Err(IntegrityError::Chain(f.to_string()));
            }
        };
        let counter = st.counter + 1;
        let ev = PendingEvent::new(
            Action::CheckpointSeal,
            "system:sealer",
            "audit",
            format!("seal-{counter}"),
        )
        .detail("reason", reason);
        self.seal_checkpoint(&mut st, &prefix, counter, ev).await?;
        tracing::info!(counter, size = prefix.size, reason, "checkpoint sealed");
        Ok(Some(counter))
    }

    /// The sealing protocol itself (SPEC §7), the caller holding the seal lock: sign a
    /// checkpoint of `prefix` carrying `counter` in the HSM, commit it with `event` (its
    /// `checkpoint_seal` event), then bring the TPM to `counter`.
    async fn seal_checkpoint(
        &self,
        st: &mut SealState,
        prefix: &VerifiedPrefix,
        counter: u64,
        event: PendingEvent,
    ) -> Result<(), IntegrityError> {
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: prefix.size,
            root: prefix.root,
            chain_head: prefix.head,
            nv_index: self.nv_index,
            counter,
        };
        let body = cp.body();
        let signature = self
            .hsm
            .call(move |b| b.sign(body.as_bytes()))
            .await
            .map_err(|e| IntegrityError::Hardware(e.to_string()))?
            .map_err(|e| IntegrityError::Signing(e.to_string()))?;
        let note = cp.signed_note(&self.public_key, &signature);
        let event = event.detail("counter", counter).detail("size", prefix.size);
        let scope = system_scope();
        self.store
            .commit(event, move |txn, _| txn.put_checkpoint(&scope, counter, &note))
            .await
            .map_err(|e| IntegrityError::StoreCheckpoint {
                counter,
                reason: e.to_string(),
            })?;
        inject_fault("after_checkpoint_commit");
        st.counter = counter;
        st.increment_pending = true;
        self.finish_increment(counter).await?;
        st.increment_pending = false;
        st.size = prefix.size;
        st.last_seal = Instant::now();
        Ok(())
    }

    /// Bring the TPM to `counter` (one increment); anything else is an alarm.
    async fn finish_increment(&self, counter: u64) -> Result<(), IntegrityError> {
        let now = self.tpm_increment().await.map_err(|e| IntegrityError::Increment {
            counter,
            source: Box::new(e),
        })?;
        if now != counter {
            let why = format!("TPM counter is {now} after sealing checkpoint {counter}: someone else increments it");
            self.raise(AlarmKind::Rollback, &why).await;
            return Err(IntegrityError::Alarm(AlarmState {
                kind: AlarmKind::Rollback,
                reason: why,
            }));
        }
        Ok(())
    }

    /// The governed `acknowledge_alarm` operation: accept the current state after a
    /// **rollback** alarm. Under the seal lock: the whole chain must verify (a chain
    /// verification failure is never acknowledged), the stored checkpoints must not be
    /// ahead of the TPM, then the verified prefix is sealed as a new checkpoint carrying
    /// the TPM's current value + 1 (commit, then increment, as in SPEC §7) and the alarm
    /// is cleared. Returns the result text for the proposal, or why it was refused.
    pub async fn acknowledge_rollback(&self, reason: &str, proposal_id: &str) -> Result<String, IntegrityError> {
        let mut st = self.seal.lock().await;
        let Some(AlarmState { kind, reason: alarm }) = self.alarm.state() else {
            return Ok("no integrity alarm was raised; nothing to acknowledge".to_owned());
        };
        let chain_failure = |why: &str| IntegrityError::ChainNotAcknowledgeable(why.to_owned());
        if kind != AlarmKind::Rollback {
            return Err(chain_failure(&alarm));
        }
        if let Some(f) = self.verifier.failure() {
            return Err(chain_failure(&f.to_string()));
        }
        let tpm = self
            .tpm_read()
            .await
            .map_err(|e| IntegrityError::AcknowledgeTpm(Box::new(e)))?;
        let verifier = self.verifier.clone();
        let prefix = tokio::task::spawn_blocking(move || verifier.full_sweep())
            .await
            .map_err(|e| IntegrityError::Hardware(e.to_string()))?
            .map_err(|e| IntegrityError::AcknowledgeLog(e.to_string()))?
            .map_err(|f| chain_failure(&f.to_string()))?;
        let stored = self
            .store
            .read()
            .and_then(|t| t.latest_checkpoint())
            .map_err(|e| IntegrityError::AcknowledgeStore(e.to_string()))?
            .map(|(c, _)| c);
        if let Some(stored) = stored.filter(|c| *c > tpm) {
            return Err(IntegrityError::AcknowledgeAhead { stored, tpm });
        }
        let counter = tpm + 1;
        let ev = PendingEvent::new(
            Action::CheckpointSeal,
            "system:governance",
            "audit",
            proposal_id.to_owned(),
        )
        .detail("reason", "acknowledge_alarm")
        .detail("proposal_id", proposal_id)
        .detail("acknowledged_alarm", alarm.as_str())
        .detail("operator_reason", reason);
        self.seal_checkpoint(&mut st, &prefix, counter, ev).await?;
        // The new checkpoint must verify against the chain like any other.
        let verifier = self.verifier.clone();
        tokio::task::spawn_blocking(move || verifier.full_sweep())
            .await
            .map_err(|e| IntegrityError::Hardware(e.to_string()))?
            .map_err(|e| IntegrityError::Read(e.to_string()))?
            .map_err(|f| chain_failure(&f.to_string()))?;
        self.alarm.clear();
        tracing::warn!(
            counter,
            proposal_id,
            "rollback alarm acknowledged by governance; alarm cleared"
        );
        Ok(format!(
            "rollback alarm acknowledged: the current state ({} events) is sealed as checkpoint {counter} (TPM counter {tpm} -> {counter}); the alarm was: {alarm}",
            prefix.size
        ))
    }

    /// Ask for a seal soon (security-critical event), rate limited by `min_interval`.
    pub fn critical_event(&self) {
        self.critical.notify_one();
    }

    /// The status for `chain_verified` answers: everything through `through_seq`
    /// recomputed, no failure, the newest checkpoint verified and matching the TPM.
    pub async fn status(&self) -> Status {
        let verifier = self.verifier.clone();
        let prefix = tokio::task::spawn_blocking(move || verifier.verify_new()).await;
        let verified_ok = matches!(prefix, Ok(Ok(Ok(_))));
        let verified = self.verifier.verified();
        // Under the seal lock, stored counter and TPM are consistent with each other.
        let st = self.seal.lock().await;
        let tpm_counter = self.tpm_read().await.ok();
        let checkpoint = self.verifier.latest_checkpoint();
        let tpm_ok = matches!((&checkpoint, tpm_counter), (Some((c, _)), Some(t)) if *c == t && *c == st.counter);
        drop(st);
        let chain_verified =
            verified_ok && tpm_ok && self.alarm.reason().is_none() && self.verifier.failure().is_none();
        let sealed_through_seq = checkpoint
            .as_ref()
            .filter(|_| tpm_ok)
            .and_then(|(_, cp)| cp.size.checked_sub(1));
        Status {
            chain_verified,
            verified,
            checkpoint: checkpoint.map(|(_, cp)| cp),
            tpm_counter,
            sealed_through_seq,
        }
    }

    /// Background work: periodic verification and sealing.
    pub fn spawn_background(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut passes = 0u64;
            loop {
                tokio::time::sleep(me.policy.verify_interval).await;
                passes += 1;
                let events = me.store.audit_head().map(|h| h.0).unwrap_or(0);
                let full = events <= FULL_SWEEP_MAX_EVENTS || passes.is_multiple_of(FULL_SWEEP_EVERY);
                let verifier = me.verifier.clone();
                let result = tokio::task::spawn_blocking(move || {
                    if full {
                        verifier.full_sweep()
                    } else {
                        verifier.verify_new()
                    }
                })
                .await;
                match result {
                    Ok(Ok(Err(f))) => me.raise(AlarmKind::ChainVerification, &f.to_string()).await,
                    Ok(Err(e)) => {
                        me.raise(
                            AlarmKind::ChainVerification,
                            &format!("verifier cannot read the audit log: {e}"),
                        )
                        .await
                    }
                    Err(e) => tracing::error!(error = %e, "verifier task failed"),
                    Ok(Ok(Ok(_))) => {}
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let critical = tokio::select! {
                    _ = tokio::time::sleep(me.policy.interval) => false,
                    _ = me.critical.notified() => true,
                };
                if critical {
                    let since = me.seal.lock().await.last_seal.elapsed();
                    // Never later than the next interval seal would have been: the rate
                    // limit must not hold back interval sealing.
                    if let Some(wait) = me.policy.min_interval.checked_sub(since) {
                        tokio::time::sleep(wait.min(me.policy.interval)).await;
                    }
                }
                if me.alarm.reason().is_some() {
                    continue;
                }
                if let Err(e) = me
                    .seal_if_active(if critical { "critical_event" } else { "interval" })
                    .await
                {
                    tracing::error!(error = %e, "checkpoint sealing failed");
                }
            }
        });
    }
}

/// Debug builds only: exit abruptly at a named point when `STRONGROOM_TEST_FAULT` names
/// it (crash-safety tests).
pub(crate) fn inject_fault(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("STRONGROOM_TEST_FAULT").is_ok_and(|f| f == point) {
        tracing::error!(point, "injected fault: exiting abruptly");
        std::process::exit(86);
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
