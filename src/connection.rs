//! [`Connection`]: one connected peer as the rest of the hub sees it — who it
//! is, a queue of frames to send it, and the calls open on it as caller and
//! as provider.
//!
//! The WebSocket itself belongs to [`crate::session`]; dispatch and the
//! catalog only ever push frames into the queue. That queue is the seam a
//! remote node could implement (forwarding frames over a message bus) without
//! the call path changing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};

use crate::protocol::{close, Identity};

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
    /// Set when this stands for a peer on another node of a cluster
    /// ([`crate::cluster`]): its frames travel over NATS.
    pub remote: Option<Remote>,
    out: mpsc::UnboundedSender<Outbound>,
    // Bytes of text frames queued and not yet taken by the writer; shared
    // with the receiving end, which subtracts what it takes.
    queued: Arc<AtomicUsize>,
    // `limits.max_outbound_bytes`: past it the peer is a slow consumer.
    budget: usize,
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

/// Where the peer a [`Connection`] stands for lives, when on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The node's id.
    pub node: Arc<str>,
    /// The peer's session number on that node (0 for the link that carries
    /// the node's calls to this one).
    pub session: u64,
}

impl Connection {
    /// A connection and the receiving end of its outbound queue, which may
    /// hold at most `budget` bytes of frames not yet written.
    pub fn new(
        session_id: u64,
        identity: Identity,
        labels: BTreeMap<String, String>,
        budget: usize,
        provides: Option<Vec<String>>,
    ) -> (Arc<Self>, OutboundQueue) {
        Self::build(
            session_id,
            identity,
            labels,
            budget,
            provides,
            now_ms(),
            None,
        )
    }

    /// A connection standing for a peer on another node, which connected at
    /// `connected_at_ms`; the receiving end forwards its frames there.
    pub fn new_remote(
        session_id: u64,
        identity: Identity,
        labels: BTreeMap<String, String>,
        budget: usize,
        connected_at_ms: u64,
        remote: Remote,
    ) -> (Arc<Self>, OutboundQueue) {
        Self::build(
            session_id,
            identity,
            labels,
            budget,
            None,
            connected_at_ms,
            Some(remote),
        )
    }

    fn build(
        session_id: u64,
        identity: Identity,
        labels: BTreeMap<String, String>,
        budget: usize,
        provides: Option<Vec<String>>,
        connected_at_ms: u64,
        remote: Option<Remote>,
    ) -> (Arc<Self>, OutboundQueue) {
        let (out, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let identity_json =
            serde_json::value::to_raw_value(&identity).expect("identity always serializes");
        let connection = Arc::new(Connection {
            session_id,
            identity,
            identity_json,
            labels,
            provides,
            connected_at_ms,
            remote,
            out,
            queued: queued.clone(),
            budget,
            closing: watch::channel(None).0,
            superseded: AtomicBool::new(false),
            calls: Mutex::new(OpenCalls::default()),
        });
        (connection, OutboundQueue { rx, queued })
    }

    /// Queues a frame; false when the session has already ended or the peer
    /// is a slow consumer: a frame that would take the queue past its byte
    /// budget is dropped and the session closes with
    /// [`close::SLOW_CONSUMER`], which ends every call it has open.
    pub fn send(&self, frame: String) -> bool {
        let bytes = frame.len();
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.budget {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            if !self.is_closing() {
                tracing::warn!(session = self.session_id, id = %self.identity.id, queued = before, "slow consumer: outbound queue over limits.max_outbound_bytes");
                self.close(
                    close::SLOW_CONSUMER,
                    "slow consumer: more than limits.max_outbound_bytes queued",
                );
            }
            return false;
        }
        if self.out.send(Outbound::Text(frame)).is_err() {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Bytes queued for the peer and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
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

/// The receiving end of a connection's outbound queue: the session's
/// writer, or the task of an in-process provider. Taking a frame gives its
/// bytes back to the connection's budget.
#[derive(Debug)]
pub struct OutboundQueue {
    rx: mpsc::UnboundedReceiver<Outbound>,
    queued: Arc<AtomicUsize>,
}

impl OutboundQueue {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await;
        self.taken(&item);
        item
    }

    /// The next frame if one is queued right now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok();
        self.taken(&item);
        item
    }

    fn taken(&self, item: &Option<Outbound>) {
        if let Some(Outbound::Text(frame)) = item {
            self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        }
    }
}

/// A queue for a caller that is not a WebSocket (an HTTP call, an SSE
/// stream, an MCP `tools/call`), with the same kind of byte budget as a
/// connection's: an item that would take it past the budget is dropped, as
/// is everything after it, and the receiver learns that it fell behind.
pub fn budgeted<T>(budget: usize) -> (BudgetedSender<T>, BudgetedReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let overflowed = Arc::new(AtomicBool::new(false));
    (
        BudgetedSender {
            tx,
            queued: queued.clone(),
            overflowed,
            budget,
        },
        BudgetedReceiver {
            rx,
            queued,
            overflowed: false,
        },
    )
}

/// The sending end of [`budgeted`].
#[derive(Debug)]
pub struct BudgetedSender<T> {
    tx: mpsc::UnboundedSender<Slot<T>>,
    queued: Arc<AtomicUsize>,
    overflowed: Arc<AtomicBool>,
    budget: usize,
}

impl<T> Clone for BudgetedSender<T> {
    fn clone(&self) -> Self {
        BudgetedSender {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            overflowed: self.overflowed.clone(),
            budget: self.budget,
        }
    }
}

#[derive(Debug)]
enum Slot<T> {
    Item(T, usize),
    Overflow,
}

impl<T> BudgetedSender<T> {
    /// Queues `item`, which weighs `bytes`; false when it was dropped
    /// (the receiver is gone or fell more than the budget behind).
    pub fn send(&self, item: T, bytes: usize) -> bool {
        if self.overflowed.load(Ordering::Acquire) {
            return false;
        }
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.budget {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            if !self.overflowed.swap(true, Ordering::AcqRel) {
                let _ = self.tx.send(Slot::Overflow);
            }
            return false;
        }
        self.tx.send(Slot::Item(item, bytes)).is_ok()
    }
}

/// The receiving end of [`budgeted`].
#[derive(Debug)]
pub struct BudgetedReceiver<T> {
    rx: mpsc::UnboundedReceiver<Slot<T>>,
    queued: Arc<AtomicUsize>,
    overflowed: bool,
}

impl<T> BudgetedReceiver<T> {
    /// The next item; `None` when every sender is gone or the queue
    /// overflowed (then [`BudgetedReceiver::overflowed`] says so).
    pub async fn recv(&mut self) -> Option<T> {
        if self.overflowed {
            return None;
        }
        match self.rx.recv().await? {
            Slot::Item(item, bytes) => {
                self.queued.fetch_sub(bytes, Ordering::AcqRel);
                Some(item)
            }
            Slot::Overflow => {
                self.overflowed = true;
                None
            }
        }
    }

    /// Whether items were dropped because the receiver fell behind.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
