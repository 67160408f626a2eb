//! When each principal's sessions last started and ended, written to the
//! store in batches instead of a write per session.
//!
//! A session start or end only notes the time in a map keyed by principal
//! (so it holds at most one entry per principal, however many sessions come
//! and go); a background task writes what the map holds every
//! [`FLUSH_INTERVAL`], in one transaction, and once more at shutdown. A
//! burst of 1,000 reconnecting spokes therefore costs one transaction, not
//! 2,000 writes queued in front of their registrations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::protocol::PrincipalKind;
use crate::store::{Seen, Store};

/// How often noted starts and ends reach the store: the most that
/// `lastConnectedAt` / `lastSeenAt` lag behind.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The pending times; cloning shares them.
#[derive(Clone, Default)]
pub struct Presence {
    // A std lock: held for one map update, never across an await.
    pending: Arc<Mutex<HashMap<(PrincipalKind, String), Times>>>,
}

#[derive(Default, Clone, Copy)]
struct Times {
    connected_at: Option<DateTime<Utc>>,
    seen_at: Option<DateTime<Utc>>,
}

impl Presence {
    /// A session of the principal started now.
    pub fn connected(&self, kind: PrincipalKind, id: &str) {
        self.note(kind, id, |t| t.connected_at = Some(Utc::now()));
    }

    /// A session of the principal ended now.
    pub fn seen(&self, kind: PrincipalKind, id: &str) {
        self.note(kind, id, |t| t.seen_at = Some(Utc::now()));
    }

    fn note(&self, kind: PrincipalKind, id: &str, set: impl FnOnce(&mut Times)) {
        let mut pending = self.pending.lock().unwrap();
        set(pending.entry((kind, id.to_owned())).or_default());
    }

    /// Writes what is pending in one transaction. On failure the times go
    /// back (unless newer ones were noted meanwhile) for the next flush.
    pub async fn flush(&self, store: &Store) {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap());
        if taken.is_empty() {
            return;
        }
        let seen: Vec<Seen> = taken
            .iter()
            .map(|((kind, id), t)| Seen {
                kind: *kind,
                id: id.clone(),
                connected_at: t.connected_at,
                seen_at: t.seen_at,
            })
            .collect();
        if let Err(e) = store.touch_principals(&seen).await {
            tracing::debug!(error = %e, principals = seen.len(), "could not record when principals were last seen; retrying");
            let mut pending = self.pending.lock().unwrap();
            for (key, times) in taken {
                let now = pending.entry(key).or_default();
                now.connected_at = now.connected_at.or(times.connected_at);
                now.seen_at = now.seen_at.or(times.seen_at);
            }
        }
    }
}
