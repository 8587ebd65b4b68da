//! Event model: what flows through the rings and what the store keeps.
//!
//! An [`Event`] is fixed-size (its payloads are inline when small), so a ring
//! slot holds it by value. Atoms and pids are raw term words (see
//! [`crate::payload::tag`]); `0` means "none" for module and function, and an
//! id of `0` means "not assigned yet" (the store assigns one on write).

use crate::links::{Links, LinksView};
use crate::payload::Payload;

/// What happened. The names are the Elixir atoms of `ElixirScope.Event.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    FunctionCall,
    FunctionReturn,
    FunctionException,
    MessageSend,
    MessageReceive,
    ProcessSpawn,
    ProcessExit,
    ProcessLink,
    StateChange,
    Error,
    Custom,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::FunctionCall,
        EventKind::FunctionReturn,
        EventKind::FunctionException,
        EventKind::MessageSend,
        EventKind::MessageReceive,
        EventKind::ProcessSpawn,
        EventKind::ProcessExit,
        EventKind::ProcessLink,
        EventKind::StateChange,
        EventKind::Error,
        EventKind::Custom,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::FunctionCall => "function_call",
            EventKind::FunctionReturn => "function_return",
            EventKind::FunctionException => "function_exception",
            EventKind::MessageSend => "message_send",
            EventKind::MessageReceive => "message_receive",
            EventKind::ProcessSpawn => "process_spawn",
            EventKind::ProcessExit => "process_exit",
            EventKind::ProcessLink => "process_link",
            EventKind::StateChange => "state_change",
            EventKind::Error => "error",
            EventKind::Custom => "custom",
        }
    }
}

/// Arity value meaning "no arity".
pub const NO_ARITY: u8 = u8::MAX;

/// One captured event, as ingested.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique per store and increasing in ingest order; 0 = not yet assigned.
    pub id: u64,
    /// Monotonic time in ns (`System.monotonic_time(:nanosecond)`); may be negative.
    pub timestamp: i64,
    /// OS system time in ns.
    pub wall_time: i64,
    /// Raw term word of the local pid the event belongs to.
    pub pid: u64,
    /// Raw atom words, 0 = none.
    pub module: u64,
    pub function: u64,
    /// 0..=254, or [`NO_ARITY`].
    pub arity: u8,
    pub kind: EventKind,
    /// True when `timestamp` was stamped at ingest (so ring-to-store latency
    /// can be measured from it).
    pub ingest_stamped: bool,
    /// Encoded `data` term.
    pub data: Payload,
    /// Encoded `peer` term; empty = nil.
    pub peer: Payload,
    /// For a message crossing nodes, its `phash2` as the tracer took it
    /// (0 mapped to 1); 0 when not taken (see [`crate::cross_node`]).
    pub fingerprint: u32,
}

/// An event's fields but its id and payloads: what a producer has decoded
/// when it queues the event (the payloads are then encoded in the ring
/// slot, so their bytes are written once).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventHeader {
    pub timestamp: i64,
    pub wall_time: i64,
    pub pid: u64,
    pub module: u64,
    pub function: u64,
    pub arity: u8,
    pub kind: EventKind,
    pub ingest_stamped: bool,
}

impl EventHeader {
    /// The event with id `id` and empty payloads.
    #[inline(always)]
    pub fn into_event(self, id: u64) -> Event {
        Event {
            id,
            timestamp: self.timestamp,
            wall_time: self.wall_time,
            pid: self.pid,
            module: self.module,
            function: self.function,
            arity: self.arity,
            kind: self.kind,
            ingest_stamped: self.ingest_stamped,
            data: Payload::empty(),
            peer: Payload::empty(),
            fingerprint: 0,
        }
    }
}

impl Event {
    /// Heap bytes owned beyond the struct (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.data.heap_bytes() + self.peer.heap_bytes()
    }
}

/// How one event relates to another (target is an event id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub kind: LinkKind,
    pub target: u64,
}

/// Link types of `CorrelatedEvent.links`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkKind {
    CalledFrom,
    Completes,
    Receives,
    SpawnedBy,
    CausedBy,
    /// A receive's send on another node (target: see [`crate::remote`]).
    RemoteReceives,
    /// A send's receive on another node (target: see [`crate::remote`]).
    RemoteReceivedBy,
}

impl LinkKind {
    /// The kind stored as `kind as u8`.
    pub fn from_u8(v: u8) -> LinkKind {
        match v {
            0 => LinkKind::CalledFrom,
            1 => LinkKind::Completes,
            2 => LinkKind::Receives,
            3 => LinkKind::SpawnedBy,
            5 => LinkKind::RemoteReceives,
            6 => LinkKind::RemoteReceivedBy,
            _ => LinkKind::CausedBy,
        }
    }

    /// Whether the target names an event on another node.
    pub fn is_remote(self) -> bool {
        matches!(self, LinkKind::RemoteReceives | LinkKind::RemoteReceivedBy)
    }

    pub fn name(self) -> &'static str {
        match self {
            LinkKind::CalledFrom => "called_from",
            LinkKind::Completes => "completes",
            LinkKind::Receives => "receives",
            LinkKind::SpawnedBy => "spawned_by",
            LinkKind::CausedBy => "caused_by",
            LinkKind::RemoteReceives => "receives",
            LinkKind::RemoteReceivedBy => "received_by",
        }
    }
}

/// Correlation metadata of a stored event. All ids 0 = none.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Correlation {
    pub correlation_id: u64,
    pub parent_id: u64,
    pub root_id: u64,
    pub links: Links,
    /// `None` until a correlator has seen the event.
    pub correlation_type: Option<EventKind>,
    /// Monotonic ns when correlated (0 = not correlated).
    pub correlated_at: i64,
    pub confidence: f32,
}

/// What the store keeps for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub event: Event,
    pub correlation: Correlation,
}

/// A stored event read in place: its scalar fields, its payload bytes and
/// links by reference (what queries encode, without copying the event).
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    pub id: u64,
    pub timestamp: i64,
    pub wall_time: i64,
    pub pid: u64,
    pub module: u64,
    pub function: u64,
    pub arity: u8,
    pub kind: EventKind,
    pub ingest_stamped: bool,
    pub data: &'a [u8],
    pub peer: &'a [u8],
    pub correlation_id: u64,
    pub parent_id: u64,
    pub root_id: u64,
    pub links: LinksView<'a>,
    pub correlation_type: Option<EventKind>,
    pub correlated_at: i64,
    pub confidence: f32,
}

impl EventView<'_> {
    /// The caller's own copy.
    pub fn to_stored(&self) -> StoredEvent {
        StoredEvent {
            event: Event {
                id: self.id,
                timestamp: self.timestamp,
                wall_time: self.wall_time,
                pid: self.pid,
                module: self.module,
                function: self.function,
                arity: self.arity,
                kind: self.kind,
                ingest_stamped: self.ingest_stamped,
                data: Payload::from_bytes(self.data),
                peer: Payload::from_bytes(self.peer),
                fingerprint: 0,
            },
            correlation: Correlation {
                correlation_id: self.correlation_id,
                parent_id: self.parent_id,
                root_id: self.root_id,
                links: self.links.to_links(),
                correlation_type: self.correlation_type,
                correlated_at: self.correlated_at,
                confidence: self.confidence,
            },
        }
    }
}

impl StoredEvent {
    pub fn view(&self) -> EventView<'_> {
        let (e, c) = (&self.event, &self.correlation);
        EventView {
            id: e.id,
            timestamp: e.timestamp,
            wall_time: e.wall_time,
            pid: e.pid,
            module: e.module,
            function: e.function,
            arity: e.arity,
            kind: e.kind,
            ingest_stamped: e.ingest_stamped,
            data: e.data.as_bytes(),
            peer: e.peer.as_bytes(),
            correlation_id: c.correlation_id,
            parent_id: c.parent_id,
            root_id: c.root_id,
            links: LinksView::from(&c.links),
            correlation_type: c.correlation_type,
            correlated_at: c.correlated_at,
            confidence: c.confidence,
        }
    }

    pub fn uncorrelated(event: Event) -> Self {
        StoredEvent {
            event,
            correlation: Correlation::default(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.event.heap_bytes() + self.correlation.links.heap_bytes()
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A small event for tests: pid and id given, fixed atoms.
    pub fn event(pid: u64, timestamp: i64) -> Event {
        Event {
            id: 0,
            timestamp,
            wall_time: timestamp,
            pid,
            module: 0x10b,
            function: 0x20b,
            arity: 1,
            kind: EventKind::FunctionCall,
            ingest_stamped: true,
            data: Payload::from_bytes(&[1, 2, 3]),
            peer: Payload::empty(),
            fingerprint: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_small() {
        // Ring slots and store slots hold these by value: keep them compact.
        assert!(std::mem::size_of::<Event>() <= 104);
        assert!(std::mem::size_of::<StoredEvent>() <= 160);
        assert_eq!(
            std::mem::size_of::<Option<StoredEvent>>(),
            std::mem::size_of::<StoredEvent>()
        );
    }

    #[test]
    fn kind_names_are_unique() {
        let mut names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
    }
}
