//! The chain verifier: recomputes every event's chain hash, its `prev` link and `seq`
//! continuity, folds the hashes into an RFC 6962 tree and compares the tree with every
//! signed checkpoint (signature, size, root, chain head).
//!
//! Invariants: `verified_through` only ever covers events whose links were recomputed;
//! once a mismatch is found the failure is sticky (only an operator clears it, by
//! restarting after repair), and nothing is sealed past it.

use std::sync::Mutex;

use super::checkpoint::Checkpoint;
use super::merkle::Frontier;
use super::{chain_hash, hash_hex, ChainHash, EVENT_PREFIX, GENESIS_PREV};
use crate::store::{ReadTxn, Store, StoreError};

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// First bad sequence number, when one event is to blame.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(f, "audit chain broken at seq {s}: {}", self.reason),
            None => write!(f, "audit chain broken: {}", self.reason),
        }
    }
}

/// A verified prefix of the chain.
#[derive(Debug, Clone)]
pub struct VerifiedPrefix {
    /// Events verified (`0..size`).
    pub size: u64,
    /// Chain hash of event `size-1`.
    pub head: ChainHash,
    /// Merkle root over them.
    pub root: ChainHash,
}

#[derive(Default)]
struct State {
    frontier: Frontier,
    last_hash: ChainHash,
    failure: Option<VerifyFailure>,
    /// The newest checkpoint that verified: (counter, checkpoint).
    latest_checkpoint: Option<(u64, Checkpoint)>,
}

/// The verifier (one per appliance).
pub struct ChainVerifier {
    store: Store,
    public_key: [u8; 32],
    origin: String,
    nv_index: u32,
    state: Mutex<State>,
}

/// Take `seq` and `prev` out of canonical event bytes without a full JSON parse:
/// `audit-event/v1\n{"seq":<n>,"prev":"sha256:<64 hex>",...`. The chain hash covers the
/// raw bytes, so nothing else needs parsing to check the chain.
pub fn seq_and_prev(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let rest = bytes
        .strip_prefix(EVENT_PREFIX.as_bytes())?
        .strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let prev = rest[digits..].strip_prefix(b",\"prev\":\"")?.get(..71)?;
    Some((seq, prev))
}

impl ChainVerifier {
    /// A verifier that trusts checkpoints signed by `public_key` for `origin`.
    pub fn new(store: Store, public_key: [u8; 32], origin: String, nv_index: u32) -> Self {
        Self {
            store,
            public_key,
            origin,
            nv_index,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sticky failure, if any.
    pub fn failure(&self) -> Option<VerifyFailure> {
        self.lock().failure.clone()
    }

    /// The verified prefix (None before the first event verified).
    pub fn verified(&self) -> VerifiedPrefix {
        let s = self.lock();
        VerifiedPrefix {
            size: s.frontier.size(),
            head: s.last_hash,
            root: s.frontier.root(),
        }
    }

    /// The newest checkpoint that verified against the chain.
    pub fn latest_checkpoint(&self) -> Option<(u64, Checkpoint)> {
        self.lock().latest_checkpoint.clone()
    }

    /// Verify events appended since the last call. CPU-bound: call from a blocking thread.
    pub fn verify_new(&self) -> Result<Result<VerifiedPrefix, VerifyFailure>, StoreError> {
        let mut state = self.lock();
        self.advance(&mut state)
    }

    /// Re-verify everything from genesis (detects edits to old events). The result
    /// replaces the incremental state.
    pub fn full_sweep(&self) -> Result<Result<VerifiedPrefix, VerifyFailure>, StoreError> {
        let mut fresh = State::default();
        let result = self.advance(&mut fresh)?;
        let mut state = self.lock();
        if state.failure.is_some() && fresh.failure.is_none() {
            // Sticky: a failure seen once is not forgotten by a later clean sweep.
            fresh.failure = state.failure.clone();
        }
        *state = fresh;
        Ok(result)
    }

    fn fail(
        state: &mut State,
        seq: Option<u64>,
        reason: String,
    ) -> Result<Result<VerifiedPrefix, VerifyFailure>, StoreError> {
        let f = VerifyFailure { seq, reason };
        if state.failure.is_none() {
            state.failure = Some(f.clone());
        }
        Ok(Err(f))
    }

    /// The stored checkpoints, each checked (signature, origin, TPM index, counter key),
    /// in counter order; `Err(reason)` when one fails or they shrink.
    fn load_checkpoints(&self, txn: &ReadTxn<'_>) -> Result<Result<Vec<(u64, Checkpoint)>, String>, StoreError> {
        let stored = match txn.checkpoints() {
            Ok(c) => c,
            Err(StoreError::Corrupt(what)) => return Ok(Err(format!("unreadable checkpoint entry ({what})"))),
            Err(e) => return Err(e),
        };
        let mut checkpoints = Vec::with_capacity(stored.len());
        for (counter, note) in stored {
            match Checkpoint::parse_verified(&note, &self.public_key) {
                Ok(cp) if cp.counter == counter && cp.origin == self.origin && cp.nv_index == self.nv_index => {
                    checkpoints.push((counter, cp))
                }
                Ok(_) => {
                    return Ok(Err(format!(
                        "checkpoint {counter} does not match its key, origin or TPM index"
                    )))
                }
                Err(e) => return Ok(Err(format!("checkpoint {counter}: {e}"))),
            }
        }
        if checkpoints.windows(2).any(|w| w[1].1.size < w[0].1.size) {
            return Ok(Err("checkpoints shrink: the log was truncated and re-sealed".into()));
        }
        Ok(Ok(checkpoints))
    }

    fn advance(&self, state: &mut State) -> Result<Result<VerifiedPrefix, VerifyFailure>, StoreError> {
        if let Some(f) = &state.failure {
            return Ok(Err(f.clone()));
        }
        let txn = self.store.read()?;
        // Checkpoints first (same snapshot).
        let checkpoints = match self.load_checkpoints(&txn)? {
            Ok(c) => c,
            Err(reason) => return Self::fail(state, None, reason),
        };
        let (head_seq, head_hash) = txn.audit_head()?;
        let start = state.frontier.size();
        // A checkpoint of exactly the prefix verified so far (the sealer's own) is compared
        // now; older ones were compared when their size was reached (or by a full sweep).
        for (counter, cp) in checkpoints.iter().filter(|(_, cp)| cp.size == start && start > 0) {
            if cp.root != state.frontier.root() || cp.chain_head != state.last_hash {
                return Self::fail(
                    state,
                    Some(start - 1),
                    format!("events do not match signed checkpoint {counter}"),
                );
            }
        }
        let mut walk = Walk {
            next: start,
            last: state.last_hash,
            bad: None,
        };
        let mut cps = checkpoints.iter().filter(move |(_, cp)| cp.size > start).peekable();
        let frontier = &mut state.frontier;
        txn.for_each_event(start, |key, bytes| walk.step(frontier, &mut cps, key, bytes))?;
        let Walk { next, last, bad } = walk;
        if let Some((seq, reason)) = bad {
            return Self::fail(state, seq, reason);
        }
        if let Some((counter, cp)) = cps.next() {
            return Self::fail(
                state,
                Some(next),
                format!(
                    "checkpoint {counter} covers {} events but only {next} exist (truncated)",
                    cp.size
                ),
            );
        }
        if next != head_seq || (next > 0 && last != head_hash) {
            return Self::fail(state, Some(next), "stored chain head does not match the events".into());
        }
        state.last_hash = last;
        state.latest_checkpoint = checkpoints.last().cloned();
        Ok(Ok(VerifiedPrefix {
            size: next,
            head: last,
            root: state.frontier.root(),
        }))
    }
}

/// The running state of one pass over the events: the next expected seq, the last chain
/// hash, and the first problem found.
struct Walk {
    next: u64,
    last: ChainHash,
    bad: Option<(Option<u64>, String)>,
}

impl Walk {
    /// Check one event (key, seq, prev link), fold it into the tree and compare every
    /// checkpoint of exactly this size. `false` stops the scan at the first problem.
    fn step<'c>(
        &mut self,
        frontier: &mut Frontier,
        cps: &mut std::iter::Peekable<impl Iterator<Item = &'c (u64, Checkpoint)>>,
        key: u64,
        bytes: &[u8],
    ) -> bool {
        let next = self.next;
        if key != next {
            self.bad = Some((
                Some(next),
                format!("event {next} is missing or out of order (found key {key})"),
            ));
            return false;
        }
        let Some((seq, prev)) = seq_and_prev(bytes) else {
            self.bad = Some((Some(next), "event bytes are not a canonical audit event".into()));
            return false;
        };
        let want_prev = if next == 0 {
            GENESIS_PREV.to_owned()
        } else {
            hash_hex(&self.last)
        };
        if seq != next || prev != want_prev.as_bytes() {
            self.bad = Some((Some(next), "seq or prev link does not match the previous event".into()));
            return false;
        }
        let hash = chain_hash(bytes);
        frontier.push(hash);
        self.last = hash;
        self.next += 1;
        while let Some((counter, cp)) = cps.peek() {
            if cp.size != self.next {
                break;
            }
            if cp.root != frontier.root() || cp.chain_head != hash {
                self.bad = Some((
                    Some(self.next - 1),
                    format!("events do not match signed checkpoint {counter}"),
                ));
                return false;
            }
            cps.next();
        }
        true
    }
}
