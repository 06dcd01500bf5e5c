// Store reads of tenant data take &TenantScope, not a bare TenantId.
use strongroom::domain::{EntityId, RecordId, TenantId};
use strongroom::store::ReadTxn;

fn read(txn: &ReadTxn<'_>, tenant: TenantId, entity: &EntityId, id: &RecordId) {
    let _ = txn.record(tenant, entity, id);
}

fn main() {
    let _ = read;
}
