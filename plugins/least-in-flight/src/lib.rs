//! The default router: least in flight with power-of-two choices.
//!
//! With one or two candidates it compares them all; with more it samples two
//! at random (derived from the call's sequence number, so the plugin needs no
//! randomness import and no state) and keeps the one with fewer calls in
//! flight. Sampling keeps the decision O(1) and avoids the herd behaviour of
//! always picking the global minimum when counts are stale.

wit_bindgen::generate!({ world: "routing-plugin", path: "../../wit/0.2.0" });

use exports::alkdev::hub::routing::{Call, Candidate, Decision, Guest};

struct LeastInFlight;

/// SplitMix64: a fast, well-mixed hash of the sequence number.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Guest for LeastInFlight {
    fn choose(call: Call, candidates: Vec<Candidate>) -> Decision {
        let n = candidates.len() as u64;
        if n <= 2 {
            let best = candidates
                .iter()
                .enumerate()
                // Ties go to the candidate the sequence points at, so equal
                // loads alternate instead of piling onto the first.
                .min_by_key(|(i, c)| (c.in_flight, (*i as u64 + call.sequence) % n))
                .map(|(i, _)| i)
                .unwrap_or(0);
            return Decision::Choose(best as u32);
        }
        let r = mix(call.sequence);
        let a = r % n;
        let b = (a + 1 + (r >> 32) % (n - 1)) % n;
        let pick = if candidates[b as usize].in_flight < candidates[a as usize].in_flight {
            b
        } else {
            a
        };
        Decision::Choose(pick as u32)
    }
}

export!(LeastInFlight);
