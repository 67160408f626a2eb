//! Concurrency caps: how many of something (sessions, unauthenticated
//! connections, HTTP calls, SSE streams) may exist at once, in total and
//! per key (a principal, a remote address).
//!
//! A [`Quota`] hands out [`Permit`]s that give their slot back when dropped,
//! so a cap cannot leak on any exit path. What each cap protects and what a
//! peer sees at it is written down in `docs/security.md`; this module only
//! counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which cap refused a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The total across all keys.
    Total,
    /// The cap of one key.
    PerKey,
}

/// A counter with a total cap and a cap per key; cloning shares it.
#[derive(Debug, Clone)]
pub struct Quota {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    total_limit: usize,
    per_key_limit: usize,
    // A std lock: held for one map update, never across an await. The map
    // holds only keys with a live permit, so it is bounded by the total cap.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    per_key: HashMap<String, usize>,
}

impl Quota {
    /// At most `total_limit` permits at once, and `per_key_limit` per key.
    pub fn new(total_limit: usize, per_key_limit: usize) -> Self {
        Quota {
            shared: Arc::new(Shared {
                total_limit,
                per_key_limit,
                state: Mutex::default(),
            }),
        }
    }

    /// A permit for `key`, or which cap is full.
    pub fn try_acquire(&self, key: &str) -> Result<Permit, Refusal> {
        let mut state = self.shared.state.lock().unwrap();
        if state.total >= self.shared.total_limit {
            return Err(Refusal::Total);
        }
        let held = state.per_key.get(key).copied().unwrap_or(0);
        if held >= self.shared.per_key_limit {
            return Err(Refusal::PerKey);
        }
        state.total += 1;
        state.per_key.insert(key.to_owned(), held + 1);
        Ok(Permit {
            quota: self.shared.clone(),
            key: key.to_owned(),
        })
    }

    /// Permits held right now, in total.
    pub fn in_use(&self) -> usize {
        self.shared.state.lock().unwrap().total
    }

    /// The cap across all keys.
    pub fn total_limit(&self) -> usize {
        self.shared.total_limit
    }

    /// The cap of one key.
    pub fn per_key_limit(&self) -> usize {
        self.shared.per_key_limit
    }
}

/// One slot of a [`Quota`], given back when dropped.
#[derive(Debug)]
pub struct Permit {
    quota: Arc<Shared>,
    key: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.quota.state.lock().unwrap();
        state.total -= 1;
        if let Some(held) = state.per_key.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                state.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Quota, Refusal};

    #[test]
    fn permits_count_per_key_and_in_total_and_come_back_when_dropped() {
        let quota = Quota::new(3, 2);
        let a1 = quota.try_acquire("a").unwrap();
        let _a2 = quota.try_acquire("a").unwrap();
        assert_eq!(quota.try_acquire("a").unwrap_err(), Refusal::PerKey);
        let _b1 = quota.try_acquire("b").unwrap();
        assert_eq!(quota.try_acquire("c").unwrap_err(), Refusal::Total);
        drop(a1);
        assert_eq!(quota.in_use(), 2);
        let _c1 = quota.try_acquire("c").unwrap();
        assert_eq!(quota.try_acquire("a").unwrap_err(), Refusal::Total);
    }
}
