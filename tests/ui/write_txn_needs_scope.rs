// Store writes of tenant data take &TenantScope, not a bare TenantId.
use strongroom::domain::{EntityId, TenantId};
use strongroom::keys::WrappedDek;
use strongroom::store::{KeyOrigin, NewRecord, WriteTxn};

fn write(txn: &mut WriteTxn<'_, '_>, tenant: &TenantId, entity: &EntityId, dek: &WrappedDek, records: &[NewRecord]) {
    let _ = txn.put_records(tenant, entity, dek, KeyOrigin::Stored, records);
}

fn main() {
    let _ = write;
}
