//! Pins each call to the candidates whose `region` label equals the call's
//! `region` metadata and picks the least busy of them; refuses when none is
//! in that region.

#[cfg(not(any(feature = "label-all", feature = "with-label")))]
mod bindings {
    wit_bindgen::generate!({ world: "routing-plugin", path: "../../../wit/0.2.0", pub_export_macro: true });
}
#[cfg(any(feature = "label-all", feature = "with-label"))]
mod bindings {
    wit_bindgen::generate!({ world: "routing-plugin", path: "../../../wit", pub_export_macro: true });
}

use bindings::alkdev::hub::call_details;
use bindings::exports::alkdev::hub::routing::{Call, Candidate, Decision, Guest};

struct Router;

impl Guest for Router {
    fn choose(_call: Call, candidates: Vec<Candidate>) -> Decision {
        let Some(region) = call_details::metadata("region") else {
            return Decision::Refuse("the call has no region".into());
        };
        let least_busy = in_region(&region, candidates.len())
            .into_iter()
            .min_by_key(|&i| candidates[i as usize].in_flight);
        match least_busy {
            Some(index) => Decision::Choose(index),
            None => Decision::Refuse(format!("no provider in region {region}")),
        }
    }
}

/// One `provider-label` read per candidate (0.2.0).
#[cfg(not(any(feature = "label-all", feature = "with-label")))]
fn in_region(region: &str, candidates: usize) -> Vec<u32> {
    (0..candidates as u32)
        .filter(|&i| call_details::provider_label(i, "region").as_deref() == Some(region))
        .collect()
}

/// Every candidate's label in one read (0.3.0).
#[cfg(feature = "label-all")]
fn in_region(region: &str, _candidates: usize) -> Vec<u32> {
    call_details::provider_label_all("region")
        .iter()
        .enumerate()
        .filter(|(_, label)| label.as_deref() == Some(region))
        .map(|(i, _)| i as u32)
        .collect()
}

/// The comparison made by the hub, in one read (0.3.0).
#[cfg(all(feature = "with-label", not(feature = "label-all")))]
fn in_region(region: &str, _candidates: usize) -> Vec<u32> {
    call_details::candidates_with_label("region", region)
}

bindings::export!(Router with_types_in bindings);
