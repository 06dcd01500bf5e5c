//! Bounded, expiring cache of unwrapped DEKs.
//!
//! Invariant: at most `capacity` keys are held, none older than `ttl`; an entry leaving
//! the cache drops its `Arc<DataKey>`, and the key bytes are wiped when the last user
//! of that `Arc` finishes (`DataKey` zeroises on drop).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::data_key::{DataKey, DekId};
use crate::domain::{EntityId, TenantId};

struct Entry {
    key: Arc<DataKey>,
    inserted: Instant,
}

/// The cache. Lookups are by (tenant, entity) and must match the DEK generation.
pub struct DekCache {
    entries: Mutex<HashMap<(TenantId, EntityId), Entry>>,
    capacity: usize,
    ttl: Duration,
}

impl DekCache {
    /// An empty cache.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, EntityId), Entry>> {
        // A poisoned lock only means another thread panicked mid-operation on a plain
        // map; the map itself is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached key of this entity, if fresh (and of generation `want`, when given).
    pub fn get(&self, tenant: &TenantId, entity: &EntityId, want: Option<DekId>) -> Option<Arc<DataKey>> {
        let mut map = self.lock();
        let k = (tenant.clone(), entity.clone());
        let entry = map.get(&k)?;
        if entry.inserted.elapsed() > self.ttl {
            map.remove(&k);
            return None;
        }
        match want {
            Some(id) if entry.key.id() != id => None,
            _ => Some(entry.key.clone()),
        }
    }

    /// Insert, evicting expired entries and then the oldest if full.
    pub fn insert(&self, tenant: &TenantId, entity: &EntityId, key: Arc<DataKey>) {
        let mut map = self.lock();
        if map.len() >= self.capacity {
            let ttl = self.ttl;
            map.retain(|_, e| e.inserted.elapsed() <= ttl);
        }
        if map.len() >= self.capacity {
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.inserted).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(
            (tenant.clone(), entity.clone()),
            Entry {
                key,
                inserted: Instant::now(),
            },
        );
    }

    /// Drop one entity's key (erasure).
    pub fn evict_entity(&self, tenant: &TenantId, entity: &EntityId) {
        self.lock().remove(&(tenant.clone(), entity.clone()));
    }

    /// Drop every key of a tenant (rotation, tenant destruction).
    pub fn evict_tenant(&self, tenant: &TenantId) {
        self.lock().retain(|(t, _), _| t != tenant);
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let t = TenantId::parse("t").unwrap();
        let cache = DekCache::new(2, Duration::from_millis(50));
        let ids: Vec<EntityId> = (0..3).map(|i| EntityId::parse(format!("e{i}")).unwrap()).collect();
        for e in &ids {
            cache.insert(&t, e, Arc::new(DataKey::generate(&crate::random::Random::os())));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&t, &ids[0], None).is_none(), "oldest evicted");
        let k = cache.get(&t, &ids[2], None).unwrap();
        assert!(cache.get(&t, &ids[2], Some(k.id())).is_some());
        assert!(cache
            .get(&t, &ids[2], Some(DataKey::generate(&crate::random::Random::os()).id()))
            .is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&t, &ids[2], None).is_none(), "expired");
    }
}
