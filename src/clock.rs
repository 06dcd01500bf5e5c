//! Time as a dependency: production reads the OS clock, tests may shift it.
//!
//! Every timestamp the appliance writes (records, tokens, audit events) comes from a
//! [`Clock`], so expiry and retention logic can be tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A source of "now". Cheap to clone.
#[derive(Clone, Default)]
pub struct Clock {
    /// Seconds added to the OS clock (0 in production; set from
    /// `STRONGROOM_TEST_CLOCK_OFFSET_SECS` only in debug builds).
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    /// The OS clock, shifted by the debug-only test offset if one is set.
    pub fn system() -> Self {
        let clock = Self::default();
        #[cfg(debug_assertions)]
        if let Some(off) = std::env::var("STRONGROOM_TEST_CLOCK_OFFSET_SECS")
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            clock.offset_secs.store(off, Ordering::Relaxed);
        }
        clock
    }

    /// Current UTC time.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::seconds(self.offset_secs.load(Ordering::Relaxed))
    }
}

/// Format a time as RFC 3339 UTC (`2026-03-08T14:22:01Z`, fractional seconds only when
/// present).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Nanoseconds since the Unix epoch, clamped to the `u64` range (times before 1970 are
/// rejected at the API edge).
pub fn unix_nanos(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos()).unwrap_or(0)
}

/// Inverse of [`unix_nanos`].
pub fn from_unix_nanos(n: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
