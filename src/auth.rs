//! Who a token belongs to: the database lookup, the short-lived cache that
//! keeps the database off the HTTP call path, and revocation of live
//! sessions whose principal was removed or disabled.
//!
//! The cache is bounded in entries and in age: a removed token keeps working
//! over HTTP for at most `limits.auth_cache_ttl_ms`. WebSocket sessions
//! authenticate once, uncached, and are closed by [`Auth::revoke_stale`]
//! when their principal goes away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::crypto::{Token, TokenKind};
use crate::protocol::{close, PrincipalKind};
use crate::sessions::SessionRegistry;
use crate::store::{Principal, Store};

/// Handle to token lookups; cloning shares the cache.
#[derive(Clone)]
pub struct Auth {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    ttl: Duration,
    max_entries: usize,
    // A std lock: held for one probe or insert, never across an await.
    cache: Mutex<HashMap<String, (Option<Principal>, Instant)>>,
}

impl Auth {
    /// Lookups against `store`, caching HTTP answers for `ttl` in at most
    /// `max_entries` entries.
    pub fn new(store: Store, ttl: Duration, max_entries: usize) -> Self {
        Auth {
            shared: Arc::new(Shared {
                store,
                ttl,
                max_entries,
                cache: Mutex::default(),
            }),
        }
    }

    /// The enabled principal of `kind` holding `token`, if any.
    pub async fn authenticate(&self, kind: PrincipalKind, token: &Token) -> Option<Principal> {
        match self.shared.store.find_principal_by_token(kind, token).await {
            Ok(found) => found.filter(|p| p.enabled),
            Err(e) => {
                tracing::warn!(error = %e, "token lookup failed");
                None
            }
        }
    }

    /// Like [`Auth::authenticate`] for either kind (the token's prefix says
    /// which), answered from the cache while the entry is younger than the
    /// TTL.
    pub async fn authenticate_cached(&self, token: &Token) -> Option<Principal> {
        let kind = match token.kind()? {
            TokenKind::Spoke => PrincipalKind::Spoke,
            TokenKind::Client => PrincipalKind::Client,
        };
        let key = token.hash().0;
        if let Some((found, at)) = self.shared.cache.lock().unwrap().get(&key) {
            if at.elapsed() < self.shared.ttl {
                return found.clone();
            }
        }
        let found = self.authenticate(kind, token).await;
        let mut cache = self.shared.cache.lock().unwrap();
        if cache.len() >= self.shared.max_entries {
            let ttl = self.shared.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        // Still full of fresh entries (a flood of distinct tokens): answer
        // uncached rather than grow or thrash.
        if cache.len() < self.shared.max_entries {
            cache.insert(key, (found.clone(), Instant::now()));
        }
        found
    }

    /// Closes (4401) every live session whose principal was removed,
    /// disabled, or removed and added again since the session authenticated.
    /// Returns how many were closed.
    pub async fn revoke_stale(&self, sessions: &SessionRegistry) -> usize {
        let peers = sessions.peers();
        if peers.is_empty() {
            return 0;
        }
        let mut current = HashSet::new();
        for kind in [PrincipalKind::Spoke, PrincipalKind::Client] {
            match self.shared.store.list_principals(kind).await {
                Ok(all) => current.extend(
                    all.into_iter()
                        .filter(|p| p.enabled)
                        .map(|p| (kind, p.id, p.created_at)),
                ),
                // Unknown is not revoked: a database hiccup must not close
                // every session.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check principals for revocation");
                    return 0;
                }
            }
        }
        let mut closed = 0;
        for (connection, version) in peers {
            let identity = &connection.identity;
            if !current.contains(&(identity.kind, identity.id.clone(), version))
                && !connection.is_closing()
            {
                tracing::info!(session = connection.session_id, kind = %identity.kind, id = %identity.id, "principal removed or disabled: closing its session");
                sessions.stop(
                    &connection,
                    close::UNAUTHENTICATED,
                    "the principal was removed or disabled",
                );
                closed += 1;
            }
        }
        closed
    }
}
