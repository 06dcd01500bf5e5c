//! The per-tenant privacy budget and the idempotency ledger, as one change inside the
//! write transaction that also appends the query's `data_query` event.
//!
//! Invariants:
//! - the charge is decided and written in a single LMDB write transaction (the store has
//!   one writer), so concurrent queries are serialised and `spent ≤ total` always holds,
//!   compared exactly in integer micro-ε;
//! - the charge commits before any record is read, and is never refunded;
//! - an `Idempotency-Key` already bound to an answer replays that answer and charges
//!   nothing; one bound to a charge whose answer is not stored (in progress, or lost in a
//!   crash) is refused, so a retry can never draw fresh noise for a charge already paid.

use serde::{Deserialize, Serialize};

use super::epsilon::Epsilon;
use super::tables;
use crate::audit::{Outcome, PendingEvent};
use crate::auth::TenantScope;
use crate::store::{ChangeError, WriteTxn};

/// An `Idempotency-Key` and the fingerprint of the query sent with it.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The header value.
    pub key: String,
    /// SHA-256 (hex) of the canonical request.
    pub fingerprint: String,
}

/// What the idempotency ledger holds for a key (JSON in `dp_idempotency`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LedgerEntry {
    fingerprint: String,
    /// The exact answer body, once stored.
    answer: Option<String>,
}

/// The result of the charging transaction.
#[derive(Debug)]
pub enum Charge {
    /// ε was charged; this much is left.
    Charged {
        /// Remaining budget after the charge.
        remaining: Epsilon,
    },
    /// Not enough budget left; nothing was charged.
    Exhausted {
        /// Remaining budget.
        remaining: Epsilon,
    },
    /// The key already holds an answer: these exact bytes, nothing charged.
    Replay(Vec<u8>),
    /// The key is bound to another query, or to a charge without a stored answer.
    Conflict(&'static str),
}

/// Charge `epsilon` against `total` plus the tenant's governed extra (or replay),
/// recording the decision in `ev`.
pub fn charge(
    txn: &mut WriteTxn<'_, '_>,
    ev: &mut PendingEvent,
    scope: &TenantScope,
    epsilon: Epsilon,
    total: Epsilon,
    claim: Option<&Claim>,
) -> Result<Charge, ChangeError> {
    let zero = Epsilon::ZERO.to_string();
    if let Some(claim) = claim {
        if let Some(entry) = txn.get(&tables::IDEMPOTENCY, (scope, &claim.key))? {
            let conflict = if entry.fingerprint != claim.fingerprint {
                "this Idempotency-Key was used with a different query"
            } else if let Some(answer) = entry.answer {
                ev.details.insert("epsilon_charged".into(), zero.into());
                ev.details.insert("replay".into(), true.into());
                return Ok(Charge::Replay(answer.into_bytes()));
            } else {
                "the query with this Idempotency-Key has no stored answer (still running, or it failed after its charge); its charge stands — use a new key"
            };
            ev.outcome = Outcome::Failed;
            ev.details.insert("epsilon_charged".into(), zero.into());
            ev.details.insert("error".into(), "conflict".into());
            return Ok(Charge::Conflict(conflict));
        }
    }
    // Governance (`raise_budget`) may have added to the configured total.
    let total = Epsilon::from_micros(
        total
            .micros()
            .saturating_add(txn.get(&tables::EXTRA, scope)?.unwrap_or(0)),
    );
    let spent = Epsilon::from_micros(txn.get(&tables::SPENT, scope)?.unwrap_or(0));
    match spent.checked_add(epsilon).filter(|after| *after <= total) {
        Some(after) => {
            txn.put(&tables::SPENT, scope, &after.micros())?;
            if let Some(claim) = claim {
                let entry = LedgerEntry {
                    fingerprint: claim.fingerprint.clone(),
                    answer: None,
                };
                txn.put(&tables::IDEMPOTENCY, (scope, &claim.key), &entry)?;
            }
            ev.details.insert("epsilon_charged".into(), epsilon.to_string().into());
            Ok(Charge::Charged {
                remaining: total.saturating_sub(after),
            })
        }
        None => {
            ev.outcome = Outcome::Denied;
            ev.details.insert("epsilon_charged".into(), zero.into());
            ev.details
                .insert("epsilon_requested".into(), epsilon.to_string().into());
            ev.details.insert("error".into(), "privacy_budget_exhausted".into());
            Ok(Charge::Exhausted {
                remaining: total.saturating_sub(spent),
            })
        }
    }
}

/// Bind the answer to its key (the key must hold this query's pending entry).
pub fn store_answer(
    txn: &mut WriteTxn<'_, '_>,
    scope: &TenantScope,
    claim: &Claim,
    answer: &[u8],
) -> Result<(), ChangeError> {
    let entry = LedgerEntry {
        fingerprint: claim.fingerprint.clone(),
        answer: Some(String::from_utf8(answer.to_vec()).map_err(|_| ChangeError::Corrupt("answer"))?),
    };
    txn.put(&tables::IDEMPOTENCY, (scope, &claim.key), &entry)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::sync::Arc;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::audit::{Action, Outcome, PendingEvent};
    use crate::domain::TenantId;
    use crate::store::Store;
    use crate::telemetry::Metrics;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Arc::new(Metrics::new().unwrap()),
            crate::clock::Clock::system(),
        )
        .unwrap();
        (dir, store)
    }

    fn ev() -> PendingEvent {
        PendingEvent::new(Action::DataQuery, "user:t", "tenant:acme", "req-test")
    }

    fn eps(s: &str) -> Epsilon {
        Epsilon::parse_positive(s).unwrap()
    }

    fn charge_once(store: &Store, tenant: &str, e: Epsilon, total: Epsilon, claim: Option<Claim>) -> (Charge, Outcome) {
        let scope = crate::auth::system_tenant_scope(&TenantId::parse(tenant).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let c = store
            .commit_blocking(ev(), move |txn, ev| {
                let r = charge(txn, ev, &scope, e, total, claim.as_ref());
                let _ = tx.send(ev.outcome);
                r
            })
            .unwrap();
        (c.value, rx.recv().unwrap())
    }

    #[test]
    fn ten_tenths_spend_exactly_one_and_the_eleventh_is_refused() {
        let (_dir, store) = store();
        for i in 0..10 {
            let (c, outcome) = charge_once(&store, "acme", eps("0.1"), eps("1.0"), None);
            let Charge::Charged { remaining } = c else {
                panic!("charge {i} refused: {c:?}")
            };
            assert_eq!(remaining.micros(), 1_000_000 - 100_000 * (i + 1));
            assert_eq!(outcome, Outcome::Allowed);
        }
        let (c, outcome) = charge_once(&store, "acme", eps("0.1"), eps("1.0"), None);
        assert!(
            matches!(c, Charge::Exhausted { remaining } if remaining == Epsilon::ZERO),
            "{c:?}"
        );
        assert_eq!(outcome, Outcome::Denied);
        // Budgets are per tenant.
        let (c, _) = charge_once(&store, "other", eps("1.0"), eps("1.0"), None);
        assert!(matches!(c, Charge::Charged { .. }));
    }

    #[test]
    fn random_sequences_never_overspend_and_refusals_do_not_close_the_budget() {
        let (_dir, store) = store();
        let mut rng = StdRng::seed_from_u64(42);
        let total = eps("3.0");
        let mut spent = 0u64;
        for _ in 0..200 {
            let e = Epsilon::from_micros(rng.gen_range(1..1_500_000));
            let (c, _) = charge_once(&store, "acme", e, total, None);
            match c {
                Charge::Charged { remaining } => {
                    spent += e.micros();
                    assert_eq!(remaining.micros(), total.micros() - spent);
                }
                Charge::Exhausted { remaining } => {
                    assert!(spent + e.micros() > total.micros());
                    assert_eq!(remaining.micros(), total.micros() - spent);
                }
                other => panic!("{other:?}"),
            }
            assert!(spent <= total.micros());
        }
        // Whatever is left can still be spent exactly.
        let left = Epsilon::from_micros(total.micros() - spent);
        if left > Epsilon::ZERO {
            let (c, _) = charge_once(&store, "acme", left, total, None);
            assert!(matches!(c, Charge::Charged { remaining } if remaining == Epsilon::ZERO));
        }
    }

    #[test]
    fn idempotency_replays_stored_answers_and_refuses_pending_or_foreign_keys() {
        let (_dir, store) = store();
        let claim = Claim {
            key: "k1".into(),
            fingerprint: "f1".into(),
        };
        let (c, _) = charge_once(&store, "acme", eps("1"), eps("10"), Some(claim.clone()));
        assert!(matches!(c, Charge::Charged { .. }));
        // Pending: refused, nothing charged.
        let (c, outcome) = charge_once(&store, "acme", eps("1"), eps("10"), Some(claim.clone()));
        assert!(matches!(c, Charge::Conflict(_)), "{c:?}");
        assert_eq!(outcome, Outcome::Failed);
        // Store the answer; now it replays.
        let scope = crate::auth::system_tenant_scope(&TenantId::parse("acme").unwrap());
        let c2 = claim.clone();
        store
            .commit_blocking(ev(), move |txn, _| store_answer(txn, &scope, &c2, br#"{"value":1}"#))
            .unwrap();
        let (c, _) = charge_once(&store, "acme", eps("1"), eps("10"), Some(claim.clone()));
        assert!(matches!(&c, Charge::Replay(b) if b == br#"{"value":1}"#), "{c:?}");
        // Another query under the same key: refused.
        let other = Claim {
            fingerprint: "f2".into(),
            ..claim.clone()
        };
        assert!(matches!(
            charge_once(&store, "acme", eps("1"), eps("10"), Some(other)).0,
            Charge::Conflict(_)
        ));
        // The same key in another tenant is another key.
        assert!(matches!(
            charge_once(&store, "other", eps("1"), eps("10"), Some(claim)).0,
            Charge::Charged { .. }
        ));
        // Only the first query was charged: 1 of 10 spent.
        let (c, _) = charge_once(&store, "acme", eps("9"), eps("10"), None);
        assert!(
            matches!(c, Charge::Charged { remaining } if remaining == Epsilon::ZERO),
            "{c:?}"
        );
    }
}
