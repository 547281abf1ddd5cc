//! The value types of the public API: messages going in, messages and index entries coming
//! out, queue information.

use std::time::{SystemTime, UNIX_EPOCH};

/// A message to insert. Priority defaults to 4, no expiration.
///
/// ```
/// use stowage::NewMessage;
/// let m = NewMessage::new(b"hello".to_vec()).priority(7).expiration(Some(1_900_000_000_000));
/// assert_eq!(m.payload(), b"hello");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub(crate) payload: Vec<u8>,
    pub(crate) priority: u8,
    pub(crate) expiration: Option<u64>,
}

impl NewMessage {
    /// A message with this payload, priority 4 and no expiration.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        NewMessage {
            payload: payload.into(),
            priority: 4,
            expiration: None,
        }
    }

    /// Sets the priority, 0..=9 (checked at insert).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the expiration in milliseconds since the Unix epoch (`None`: never).
    pub fn expiration(mut self, expiration: Option<u64>) -> Self {
        self.expiration = expiration;
        self
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

impl From<Vec<u8>> for NewMessage {
    fn from(p: Vec<u8>) -> Self {
        NewMessage::new(p)
    }
}

impl From<&[u8]> for NewMessage {
    fn from(p: &[u8]) -> Self {
        NewMessage::new(p.to_vec())
    }
}

impl From<&str> for NewMessage {
    fn from(p: &str) -> Self {
        NewMessage::new(p.as_bytes().to_vec())
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its key in the queue.
    pub key: u64,
    /// 0..=9.
    pub priority: u8,
    /// Times delivered (set by the broker).
    pub delivery_count: u32,
    /// Milliseconds since the Unix epoch, or `None`.
    pub expiration: Option<u64>,
    /// The payload (derefs to `[u8]`).
    pub payload: Vec<u8>,
}

/// A stored message's index entry, without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its key in the queue.
    pub key: u64,
    /// 0..=9.
    pub priority: u8,
    /// Times delivered.
    pub delivery_count: u32,
    /// Milliseconds since the Unix epoch, or `None`.
    pub expiration: Option<u64>,
    /// Payload length in bytes.
    pub size: u64,
}

/// What `Store::queues` reports for one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// Messages in the queue.
    pub messages: u64,
    /// Sum of payload lengths.
    pub bytes: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
