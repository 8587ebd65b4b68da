//! Query: filtered selections (the filters of `ElixirScope.Query.select`).
//!
//! A filter is a conjunction of optional conditions on an event's fields
//! and payload. The store answers it from its narrowest index: a pid's
//! posting list, a {module, function}'s, the time range's chunks, else a
//! scan of the log; every condition is then checked on each candidate
//! record in place, so no event is copied unless it matches.

use super::{directory, Hit, Order, Record, Store, NONE};
use crate::event::EventKind;
use crate::payload::contains_term;

/// Conditions on an event; `None` (or an empty set) matches anything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub pid: Option<u64>,
    /// Bit `kind as u8` set for each kind wanted; 0 = every kind.
    pub kinds: u16,
    pub module: Option<u64>,
    pub function: Option<u64>,
    pub arity: Option<u8>,
    /// `from <= timestamp <= to`.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// An encoded term to find in the event's data, at any depth.
    pub data: Option<Vec<u8>>,
    /// Ids strictly after / before these.
    pub after: Option<u64>,
    pub before: Option<u64>,
}

impl Filter {
    pub fn kind(mut self, kind: EventKind) -> Self {
        self.kinds |= 1 << kind as u8;
        self
    }

    fn wants(&self, kind: EventKind) -> bool {
        self.kinds == 0 || self.kinds & (1 << kind as u8) != 0
    }
}

impl Store {
    /// The events `filter` matches, as (id, position) hits in id order
    /// (the first `limit`, or the last with `Order::Desc`).
    pub fn query(&self, filter: &Filter, limit: usize, order: Order) -> Vec<Hit> {
        let front = self.log.front();
        let mut hits: Vec<Hit> = Vec::new();
        let mut check = |pos: u64| {
            if let Some(r) = self.log.record(pos) {
                if r.is_live() && self.matches(filter, r, pos) {
                    hits.push(Hit { id: r.id, pos });
                }
            }
        };
        let fun_key = match (filter.module, filter.function) {
            (Some(m), Some(f)) => Some(self.functions.positions(&(m, f))),
            _ => None,
        };
        if let Some(pid) = filter.pid {
            if let Some((_, list)) = self.pids.positions(&pid) {
                list.iter().for_each(|&p| check(directory::widen(p, front)));
            }
        } else if let Some(list) = fun_key {
            if let Some((_, list)) = list {
                list.iter().for_each(|&p| check(directory::widen(p, front)));
            }
        } else if filter.from.is_some() || filter.to.is_some() {
            let (from, to) = (
                filter.from.unwrap_or(i64::MIN),
                filter.to.unwrap_or(i64::MAX),
            );
            for (start, end) in self.log.time_candidates(from, to) {
                (start..end).for_each(&mut check);
            }
        } else {
            (front..self.log.end()).for_each(&mut check);
        }
        super::sort_by_id(&mut hits, order);
        hits.truncate(limit);
        hits
    }

    pub(super) fn matches(&self, f: &Filter, r: &Record, pos: u64) -> bool {
        if !f.wants(r.kind) {
            return false;
        }
        if f.pid.is_some_and(|pid| self.pids.key(r.pid_key) != pid) {
            return false;
        }
        if f.module.is_some() || f.function.is_some() {
            if r.fun_key == NONE {
                return false;
            }
            let (m, fun) = self.functions.key(r.fun_key);
            if f.module.is_some_and(|x| x != m) || f.function.is_some_and(|x| x != fun) {
                return false;
            }
        }
        if f.after.is_some_and(|id| r.id <= id) || f.before.is_some_and(|id| r.id >= id) {
            return false;
        }
        if f.arity.is_some_and(|a| a != r.arity) {
            return false;
        }
        if f.from.is_some_and(|t| r.timestamp < t) || f.to.is_some_and(|t| r.timestamp > t) {
            return false;
        }
        match &f.data {
            Some(needle) => self
                .log
                .get(pos)
                .is_some_and(|e| contains_term(e.data, needle)),
            None => true,
        }
    }
}
