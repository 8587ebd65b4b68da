//! Record: the compact form of one stored event.
//!
//! A record keeps an event's scalar fields and its correlation in 96 bytes.
//! What it leaves out lives elsewhere, once: the pid and the {module,
//! function} are interned keys of the store's indexes ([`super::keys`]),
//! and the payload bytes sit in its chunk's arena ([`super::log`]), so a
//! record is fixed-size and a chunk of them is one allocation.
//!
//! `partner` names the one event that joined this one (took its id as
//! correlation id: a call's return, a send's receive) by log position, so
//! `by_correlation` follows a pointer instead of keeping a hash index with
//! one key per call.

use crate::event::EventKind;
use crate::links::Links;

/// Flag bits of [`Record::flags`].
pub mod flag {
    /// The event's timestamp was stamped at ingest.
    pub const INGEST_STAMPED: u8 = 1;
    /// A correlator has seen the event (`correlation_type` is its kind).
    pub const CORRELATED: u8 = 2;
    /// Removed (`remove_before`, or replaced by a newer write of its id):
    /// the slot stays until the log's front passes it.
    pub const REMOVED: u8 = 4;
    /// A send or receive whose partner had not arrived when it was stored.
    pub const PENDING: u8 = 8;
    /// Its correlation changed after it was stored (a patch, or a partner
    /// that arrived later).
    pub const PATCHED: u8 = 16;
}

/// No key (an event without module and function) / no partner.
pub const NONE: u32 = u32::MAX;

pub struct Record {
    pub id: u64,
    pub timestamp: i64,
    pub wall_time: i64,
    pub correlation_id: u64,
    pub parent_id: u64,
    pub root_id: u64,
    pub correlated_at: i64,
    pub links: Links,
    /// Interned pid (always set) and {module, function} (or [`NONE`]).
    pub pid_key: u32,
    pub fun_key: u32,
    /// Offset of the payload bytes in the chunk's arena.
    pub payload_at: u32,
    /// Log position (low 32 bits) of the event that joined this one, or [`NONE`].
    pub partner: u32,
    pub confidence: f32,
    pub kind: EventKind,
    pub arity: u8,
    pub flags: u8,
}

impl Record {
    pub fn is_live(&self) -> bool {
        self.flags & flag::REMOVED == 0
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_stay_at_96_bytes() {
        assert_eq!(std::mem::size_of::<super::Record>(), 96);
    }
}
