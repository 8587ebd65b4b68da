//! Trace: one stored event's way through the pipeline, for debugging.
//!
//! Nothing is kept per event for it beyond two flag bits of its record
//! (pending when stored, patched later): the writer and the time it was
//! stored come from its batch ([`super::History`]), the correlator's
//! attempts are read off its final state and those bits.

use super::record::{flag, Record};
use crate::event::{EventKind, Link};

/// What the correlator did with an event, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// A call, spawn, exit, state change...: it waits for no partner.
    NoPartnerExpected,
    /// Joined its partner (this id) as it was stored.
    MatchedAtOnce(u64),
    /// Its partner had not arrived when it was stored.
    WaitedAsPending,
    /// Changed after it was stored: its partner (this id) arrived, or a
    /// patch (0: no partner, e.g. a confidence lowered).
    PatchedLater(u64),
    /// Still waiting for its partner, within the correlation TTL.
    StillPending,
    /// Waited longer than the correlation TTL: its partner will not be
    /// linked any more.
    Expired,
    /// A return or exception that matched no open call.
    Orphaned,
}

/// A stored event's history (see [`super::Store::trace`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EventTrace {
    pub id: u64,
    /// Monotonic ns at ingest, when the pipeline stamped it (`None` for an
    /// event that came with its own timestamp).
    pub ingestion_time: Option<i64>,
    /// The worker that wrote it (0: a direct write).
    pub writer: u32,
    pub storage_time: i64,
    pub correlated_at: i64,
    pub attempts: Vec<Attempt>,
    pub correlation_id: u64,
    /// The event that joined this one (a call's return, a send's receive).
    pub partner: Option<u64>,
    pub confidence: f32,
    pub links: Vec<Link>,
}

/// The attempts for `r`, whose partner is `partner`, at `now` with the
/// correlation TTL `ttl_ns`.
pub fn attempts(r: &Record, partner: Option<u64>, now: i64, ttl_ns: i64) -> Vec<Attempt> {
    let joined = (r.correlation_id != 0 && r.correlation_id != r.id).then_some(r.correlation_id);
    let patched = r.has(flag::PATCHED);
    let waiting = |found: Option<u64>| {
        let mut a = vec![Attempt::WaitedAsPending];
        match found {
            Some(id) => a.push(Attempt::PatchedLater(id)),
            None if now.saturating_sub(r.correlated_at) > ttl_ns => a.push(Attempt::Expired),
            None => a.push(Attempt::StillPending),
        }
        a
    };
    match r.kind {
        EventKind::FunctionReturn | EventKind::FunctionException => match joined {
            Some(call) => vec![Attempt::MatchedAtOnce(call)],
            None => vec![Attempt::Orphaned],
        },
        EventKind::MessageReceive if r.has(flag::PENDING) => waiting(joined),
        EventKind::MessageReceive => vec![Attempt::MatchedAtOnce(joined.unwrap_or(0))],
        EventKind::MessageSend if r.has(flag::PENDING) => waiting(partner),
        EventKind::MessageSend => vec![Attempt::MatchedAtOnce(partner.unwrap_or(0))],
        _ if patched => vec![Attempt::NoPartnerExpected, Attempt::PatchedLater(0)],
        _ => vec![Attempt::NoPartnerExpected],
    }
}
