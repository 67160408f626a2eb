//! [`Connection`]: one connected peer as the rest of the hub sees it — who it
//! is, a queue of frames to send it, and the calls open on it as caller and
//! as provider.
//!
//! The WebSocket itself belongs to [`crate::session`]; dispatch and the
//! catalog only ever push frames into the queue. That queue is the seam a
//! remote node could implement (forwarding frames over a message bus) without
//! the call path changing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};

use crate::protocol::Identity;

/// What the session's writer sends.
#[derive(Debug)]
pub enum Outbound {
    /// One text frame.
    Text(String),
    /// A close frame with this code and reason; nothing is sent after it.
    Close(u16, String),
}

/// One live peer (a WebSocket session).
#[derive(Debug)]
pub struct Connection {
    /// Unique for the hub's lifetime.
    pub session_id: u64,
    /// Who authenticated.
    pub identity: Identity,
    /// `identity` serialized once, for forwarding in every call.
    pub identity_json: Box<RawValue>,
    /// Labels from `hello`, merged over the stored ones.
    pub labels: BTreeMap<String, String>,
    /// The principal's provider grants when the session authenticated
    /// (`None`: the default of its kind); see [`crate::registration::Grants`].
    pub provides: Option<Vec<String>>,
    /// When the session started, ms since the Unix epoch.
    pub connected_at_ms: u64,
    out: mpsc::UnboundedSender<Outbound>,
    closing: watch::Sender<Option<u16>>,
    superseded: AtomicBool,
    /// The calls open on this peer, as caller and as provider.
    pub(crate) calls: Mutex<OpenCalls>,
}

/// The calls open on one connection. One lock for both sides, so that a
/// departing peer can be marked gone and drained atomically: a call that
/// races with the departure either lands before the drain or sees `gone`.
#[derive(Debug, Default)]
pub(crate) struct OpenCalls {
    /// Calls this peer made: its request id → the hub's call id.
    pub calling: HashMap<Arc<str>, u64>,
    /// Calls this peer serves: the hub's call ids.
    pub serving: HashSet<u64>,
    /// Set once the peer has left; nothing is added after that.
    pub gone: bool,
}

impl Connection {
    /// A connection and the receiving end of its outbound queue.
    pub fn new(
        session_id: u64,
        identity: Identity,
        labels: BTreeMap<String, String>,
        provides: Option<Vec<String>>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Outbound>) {
        let (out, rx) = mpsc::unbounded_channel();
        let identity_json =
            serde_json::value::to_raw_value(&identity).expect("identity always serializes");
        let connection = Arc::new(Connection {
            session_id,
            identity,
            identity_json,
            labels,
            provides,
            connected_at_ms: now_ms(),
            out,
            closing: watch::channel(None).0,
            superseded: AtomicBool::new(false),
            calls: Mutex::new(OpenCalls::default()),
        });
        (connection, rx)
    }

    /// Queues a frame; false when the session has already ended.
    pub fn send(&self, frame: String) -> bool {
        self.out.send(Outbound::Text(frame)).is_ok()
    }

    /// Asks the session to close with `code`; its reader stops at once.
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.out.send(Outbound::Close(code, reason.to_owned()));
        self.closing.send_replace(Some(code));
    }

    /// Whether [`Connection::close`] has been called: the session is ending
    /// and must not register, activate or publish anything more.
    pub fn is_closing(&self) -> bool {
        self.closing.borrow().is_some()
    }

    /// Resolves when [`Connection::close`] has been called.
    pub fn closing(&self) -> watch::Receiver<Option<u16>> {
        self.closing.subscribe()
    }

    /// Marks the session as replaced by a newer one of the same spoke.
    pub fn mark_superseded(&self) {
        self.superseded.store(true, Ordering::Release);
    }

    /// Whether a newer session of the same spoke replaced this one.
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Number of calls this peer has open as caller.
    pub fn open_calls(&self) -> usize {
        self.calls.lock().unwrap().calling.len()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
