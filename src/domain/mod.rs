//! Domain newtypes parsed once at the edge: after parsing, an id is known valid
//! (`[A-Za-z0-9._:-]{1,128}`), so nothing inside handles raw `String` ids.

mod ids;

pub use ids::{loggable_id, Actor, EntityId, IdError, RecordId, TenantId};
