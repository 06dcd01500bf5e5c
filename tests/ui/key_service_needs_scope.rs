// Unwrapping a data key takes &TenantScope, not a bare TenantId.
use strongroom::domain::{EntityId, TenantId};
use strongroom::keys::{KeyService, WrappedDek};

async fn unwrap(keys: &KeyService, tenant: &TenantId, entity: &EntityId, wrapped: &WrappedDek) {
    let _ = keys.data_key(tenant, entity, wrapped).await;
}

fn main() {
    let _ = unwrap;
}
