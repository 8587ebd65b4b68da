//! Correlator: turns a stream of events into causal links, incrementally.
//!
//! Events arrive in per-pid order (one pid is drained from one shard), but
//! the pids interleave arbitrarily: a receive may be seen before its send, a
//! child's first call before its spawn. Each event is correlated once, when
//! it arrives, into a [`Correlation`]; when the late half of a pair arrives
//! later, [`Correlator::correlate`] also returns [`Patch`]es for events
//! already handed out (the store applies them in place). So the result is
//! eventually consistent: once both halves are in, the links are the same
//! whatever the arrival order.
//!
//! Strategies, one module each, share the per-pid [`Context`]:
//! [`function`] (call stacks), [`message`] (send/receive matching),
//! [`process`] (spawn/exit, the process tree) and [`state`] (state changes
//! tied to their cause).
//!
//! Bounds: state older than the TTL is dropped by [`Correlator::cleanup`]
//! (also run on its own every `cleanup_interval`), and at most `max_entries`
//! pending halves and pid contexts are kept: past it the oldest go, down
//! to half the bound, so an eviction's passes over the state are paid
//! once per half a bound of new state. Every eviction is counted.

pub mod function;
pub mod message;
mod pending;
pub mod process;
pub(crate) mod queue;
pub mod state;

use crate::cross_node::{Collected, Half, LocalNode};
use crate::event::{Correlation, Event, EventKind, Link, LinkKind};
use crate::hash::WordMap;

/// Entries counted by the log2 of their age: bucket `k` holds the ages
/// in `[2^(k-1), 2^k)`, bucket 0 those of 0 or less.
pub(crate) struct Ages([usize; 64]);

impl Default for Ages {
    fn default() -> Self {
        Ages([0; 64])
    }
}

impl Ages {
    /// Counts an entry of timestamp `at`.
    pub fn add(&mut self, now: i64, at: i64) {
        let age = now.saturating_sub(at).max(0) as u64;
        self.0[(64 - age.leading_zeros()) as usize] += 1;
    }

    /// The cutoff (drop what is older) that keeps at most `keep` entries:
    /// the youngest buckets that fit whole.
    fn cutoff(&self, now: i64, keep: usize) -> i64 {
        let mut kept = 0;
        for (k, &n) in self.0.iter().enumerate() {
            if kept + n > keep {
                return match k {
                    0 => i64::MAX,
                    // Ages below 2^(k-1) stay.
                    k => now.saturating_sub((1i64 << (k - 1)) - 1),
                };
            }
            kept += n;
        }
        i64::MIN
    }
}

/// Limits of the correlator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CorrelatorConfig {
    /// Pending halves and idle pid contexts older than this are dropped.
    pub ttl_ns: i64,
    /// How often `correlate` runs the TTL cleanup by itself.
    pub cleanup_interval_ns: i64,
    /// Deepest call stack kept per pid.
    pub max_depth: usize,
    /// Most pending halves (and most pid contexts) kept.
    pub max_entries: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            ttl_ns: 300 * 1_000_000_000,
            cleanup_interval_ns: 60 * 1_000_000_000,
            max_depth: 100,
            max_entries: 1_000_000,
        }
    }
}

/// Confidence of a call closed by an outer return (its own return was
/// never seen: a tail call or a missed return).
pub const UNFINISHED: f32 = 0.5;

/// A change to an event that was already correlated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Patch {
    pub id: u64,
    pub change: Change,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change {
    /// Add this link (the late half of a pair arrived).
    Link(Link),
    /// Add the link and take the pair's correlation id.
    Matched {
        link: Link,
        correlation_id: u64,
        confidence: f32,
    },
    /// Lower the confidence to at most this.
    Confidence(f32),
}

impl Change {
    /// Applies the change to a stored correlation.
    pub fn apply(&self, c: &mut Correlation) {
        match *self {
            Change::Link(link) => c.links.push(link),
            Change::Matched {
                link,
                correlation_id,
                confidence,
            } => {
                c.links.push(link);
                c.correlation_id = correlation_id;
                c.confidence = confidence;
            }
            Change::Confidence(v) => c.confidence = c.confidence.min(v),
        }
    }
}

/// What the correlator knows of one pid.
#[derive(Default)]
pub struct Context {
    /// Open calls, outermost first.
    pub frames: Vec<function::Frame>,
    /// The last event of this pid was a receive (its id), or 0.
    pub just_received: u64,
    /// The last receive of this pid, or 0.
    pub last_receive: u64,
    /// The receive that caused the current root call (the message a
    /// GenServer callback is handling), or 0.
    pub root_cause: u64,
    /// The spawn event that created this pid, once known, or 0.
    pub spawned_by: u64,
    /// This pid's first root call, or 0 (linked to the spawn when it arrives).
    pub first_root_call: u64,
    /// Timestamp of the pid's latest event (for the TTL).
    pub seen_at: i64,
}

/// Age buckets of [`Dump`]'s pending halves: under 1 s, 10 s, 60 s, and older.
pub const AGE_BOUNDS_NS: [i64; 3] = [1_000_000_000, 10_000_000_000, 60_000_000_000];

/// A view of a correlator's state (see [`Correlator::dump`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dump {
    /// (pid, open calls), deepest first.
    pub open_calls: Vec<(u64, usize)>,
    /// Pending halves per age bucket ([`AGE_BOUNDS_NS`], then older).
    pub pending_sends_by_age: [u64; 4],
    pub pending_receives_by_age: [u64; 4],
    pub tree_edges: usize,
    pub contexts: usize,
}

/// Counters of a correlator.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CorrelatorStats {
    pub correlated: u64,
    /// Events that expect a partner (returns, exceptions, receives) ...
    pub linkable: u64,
    /// ... and those that found it (at once or later).
    pub linked: u64,
    pub orphaned_returns: u64,
    pub unfinished_calls: u64,
    pub ambiguous_matches: u64,
    pub depth_overflows: u64,
    /// Sends to a name, alias or port (matched by sender, when possible).
    pub unaddressed_sends: u64,
    /// Sends to and receives from other nodes, once the node is named
    /// (set aside for the cluster exchange while a cluster session
    /// collects, see [`crate::cross_node`]).
    pub cross_node_sends: u64,
    pub cross_node_receives: u64,
    pub expired: u64,
    pub evicted: u64,
    pub pending_sends: u64,
    pub pending_receives: u64,
    pub contexts: u64,
    pub memory_bytes: u64,
}

impl CorrelatorStats {
    /// Share of events expecting a partner that found it (1.0 when none).
    pub fn success_rate(&self) -> f64 {
        if self.linkable == 0 {
            1.0
        } else {
            self.linked as f64 / self.linkable as f64
        }
    }
}

pub struct Correlator {
    config: CorrelatorConfig,
    contexts: WordMap<u64, Context>,
    messages: message::Messages,
    processes: process::Tree,
    stats: CorrelatorStats,
    last_cleanup: Option<i64>,
    /// This node, once a trace session or the cluster layer named it:
    /// messages between it and other nodes are then told apart, and never
    /// wait here for a half that is on another node.
    local_node: Option<LocalNode>,
    /// A cluster session runs: those messages are set aside in `crossing`
    /// for its exchange (else they are counted and left unlinked).
    collecting: bool,
    crossing: Collected,
}

impl Correlator {
    pub fn new(config: CorrelatorConfig) -> Self {
        Correlator {
            config,
            contexts: WordMap::default(),
            messages: message::Messages::default(),
            processes: process::Tree::default(),
            stats: CorrelatorStats::default(),
            last_cleanup: None,
            local_node: None,
            collecting: false,
            crossing: Collected::default(),
        }
    }

    pub fn config(&self) -> CorrelatorConfig {
        self.config
    }

    /// Names this node: from now on, a message between it and another
    /// node is counted as crossing nodes and does not wait here for its
    /// other half, which is on the other node (`None`: this node is not
    /// known, and such messages wait here as any other).
    pub fn set_local_node(&mut self, node: Option<LocalNode>) {
        self.local_node = node;
    }

    pub fn local_node(&self) -> Option<&LocalNode> {
        self.local_node.as_ref()
    }

    /// A cluster session starts here: names this node and sets messages
    /// crossing nodes aside in [`Correlator::crossing`] for the exchange
    /// from now on.
    pub fn collect_crossing_as(&mut self, node: LocalNode) {
        self.local_node = Some(node);
        self.collecting = true;
    }

    /// The cluster session stopped: messages crossing nodes are only
    /// counted again (what was set aside stays for its last round).
    pub fn stop_collecting(&mut self) {
        self.collecting = false;
    }

    pub fn collecting(&self) -> bool {
        self.collecting
    }

    /// The sends and receives crossing nodes set aside, oldest first (the
    /// exchange takes them).
    pub fn crossing(&mut self) -> &mut Collected {
        &mut self.crossing
    }

    pub fn set_config(&mut self, config: CorrelatorConfig) {
        self.config = config;
    }

    /// Correlates one event (its id must be assigned); patches for earlier
    /// events are appended to `patches`. `now` is monotonic ns.
    pub fn correlate(&mut self, event: &Event, now: i64, patches: &mut Vec<Patch>) -> Correlation {
        self.stats.correlated += 1;
        let ctx = self.contexts.entry(event.pid).or_default();
        ctx.seen_at = ctx.seen_at.max(event.timestamp);
        let mut c = Correlation {
            correlation_id: event.id,
            correlation_type: Some(event.kind),
            correlated_at: now,
            confidence: 1.0,
            ..Default::default()
        };
        let stats = &mut self.stats;
        match event.kind {
            EventKind::FunctionCall => {
                function::call(ctx, event, self.config.max_depth, &mut c, stats)
            }
            EventKind::FunctionReturn | EventKind::FunctionException => {
                function::complete(ctx, event, &mut c, stats, patches)
            }
            EventKind::MessageSend | EventKind::MessageReceive => {
                function::within_stack(ctx, &mut c);
                match self.local_node.as_ref().and_then(|n| n.half(event)) {
                    Some(half) => {
                        if let Half::In(_) = half {
                            // Unmatched until the exchange links it (as a
                            // local receive waiting for its send), or for
                            // good outside a cluster session.
                            stats.cross_node_receives += 1;
                            c.correlation_id = 0;
                            c.confidence = 0.0;
                        } else {
                            stats.cross_node_sends += 1;
                        }
                        if self.collecting {
                            self.crossing.push(half);
                        }
                    }
                    None if event.kind == EventKind::MessageSend => {
                        self.messages.send(event, stats, patches)
                    }
                    None => self.messages.receive(event, &mut c, stats, patches),
                }
            }
            EventKind::ProcessSpawn => {
                function::within_stack(ctx, &mut c);
                self.processes.spawn(event, &mut self.contexts, patches);
            }
            EventKind::ProcessExit => {
                if let Some(ctx) = self.contexts.remove(&event.pid) {
                    function::close_all(&ctx, stats, patches);
                }
                self.processes.exit(event.pid, event.timestamp);
            }
            EventKind::StateChange => state::change(ctx, &mut c),
            EventKind::ProcessLink | EventKind::Error | EventKind::Custom => {
                function::within_stack(ctx, &mut c)
            }
        }
        if let Some(ctx) = self.contexts.get_mut(&event.pid) {
            ctx.just_received = 0;
            if event.kind == EventKind::MessageReceive {
                ctx.just_received = event.id;
                ctx.last_receive = event.id;
            }
        }
        self.maybe_cleanup(now);
        c
    }

    fn maybe_cleanup(&mut self, now: i64) {
        let last = *self.last_cleanup.get_or_insert(now);
        if self.over_bound() || now - last >= self.config.cleanup_interval_ns {
            self.cleanup(now);
            if self.over_bound() {
                self.stats.evicted += self.evict(now);
            }
        }
    }

    fn over_bound(&self) -> bool {
        self.messages.entries() > self.config.max_entries
            || self.contexts.len() > self.config.max_entries
    }

    /// Over the entry bound: drops the oldest state, down to half the
    /// bound, in two passes (one counts the entries by age, one drops
    /// those older than the youngest ages that fit). So an eviction comes
    /// only after half a bound of new state, and costs each entry a few
    /// visits however full the bound stays (pending halves that never
    /// find their other half, as the replies to callers not traced, fill
    /// it at the rate messages come). Returns how many entries went.
    fn evict(&mut self, now: i64) -> u64 {
        let keep = self.config.max_entries / 2;
        let mut cutoff = i64::MIN;
        if self.messages.entries() > self.config.max_entries {
            let mut ages = Ages::default();
            self.messages.count_ages(now, &mut ages);
            cutoff = cutoff.max(ages.cutoff(now, keep));
        }
        if self.contexts.len() > self.config.max_entries {
            let mut ages = Ages::default();
            self.contexts
                .values()
                .for_each(|c| ages.add(now, c.seen_at));
            cutoff = cutoff.max(ages.cutoff(now, keep));
        }
        self.drop_older_than(cutoff)
    }

    /// Drops state older than the TTL; returns how many entries went.
    pub fn cleanup(&mut self, now: i64) -> u64 {
        self.last_cleanup = Some(now);
        let cleaned = self.drop_older_than(now.saturating_sub(self.config.ttl_ns));
        self.stats.expired += cleaned;
        cleaned
    }

    fn drop_older_than(&mut self, cutoff: i64) -> u64 {
        let before = self.contexts.len();
        self.contexts.retain(|_, ctx| ctx.seen_at >= cutoff);
        (before - self.contexts.len()) as u64
            + self.messages.drop_older_than(cutoff)
            + self.processes.drop_older_than(cutoff)
    }

    /// Drops every pending half and idle context older than `cutoff`
    /// (monotonic ns) now, whatever the TTL (an operator's cleanup);
    /// returns how many entries went, counted as evicted.
    pub fn force_cleanup(&mut self, cutoff: i64) -> u64 {
        let dropped = self.drop_older_than(cutoff);
        self.stats.evicted += dropped;
        dropped
    }

    /// What the correlator holds, for operators: open calls per pid
    /// (deepest first), pending halves by age at `now`, the process tree's
    /// size.
    pub fn dump(&self, now: i64) -> Dump {
        let mut open_calls: Vec<(u64, usize)> = self
            .contexts
            .iter()
            .filter(|(_, c)| !c.frames.is_empty())
            .map(|(&pid, c)| (pid, c.frames.len()))
            .collect();
        open_calls.sort_unstable_by_key(|&(pid, depth)| (std::cmp::Reverse(depth), pid));
        let (pending_sends_by_age, pending_receives_by_age) = self.messages.pending_by_age(now);
        Dump {
            open_calls,
            pending_sends_by_age,
            pending_receives_by_age,
            tree_edges: self.processes.edges().len(),
            contexts: self.contexts.len(),
        }
    }

    /// Records a spawn relation read from a saved trace.
    pub fn record_spawn(&mut self, parent: u64, child: u64, spawn_id: u64) {
        self.processes.record(parent, child, spawn_id);
    }

    /// Known spawn relations: (parent, child, spawn event id).
    pub fn process_tree(&self) -> Vec<(u64, u64, u64)> {
        self.processes.edges()
    }

    /// Events correlated so far (O(1), unlike [`Correlator::stats`], which
    /// walks the state to size it).
    pub fn correlated(&self) -> u64 {
        self.stats.correlated
    }

    pub fn stats(&self) -> CorrelatorStats {
        let mut s = self.stats;
        s.pending_sends = self.messages.pending_sends() as u64;
        s.pending_receives = self.messages.pending_receives() as u64;
        s.contexts = self.contexts.len() as u64;
        let frames: usize = self.contexts.values().map(|c| c.frames.capacity()).sum();
        s.memory_bytes = (self.contexts.capacity() * (std::mem::size_of::<(u64, Context)>() + 1)
            + frames * std::mem::size_of::<function::Frame>()
            + self.messages.memory_bytes()
            + self.processes.memory_bytes()
            + self.crossing.memory_bytes()) as u64;
        s
    }
}

/// Which event a chain step leads back to, if any: the partner a link
/// names (receive -> send, return -> call, cause, caller), else the
/// enclosing call, else the spawn.
pub fn step_back(c: &Correlation, own_id: u64) -> Option<u64> {
    let find = |kind: LinkKind| c.links.iter().find(|l| l.kind == kind).map(|l| l.target);
    find(LinkKind::Receives)
        .or_else(|| find(LinkKind::Completes))
        .or_else(|| find(LinkKind::CausedBy))
        .or_else(|| find(LinkKind::CalledFrom))
        .or_else(|| (c.parent_id != 0 && c.parent_id != own_id).then_some(c.parent_id))
        .or_else(|| find(LinkKind::SpawnedBy))
}

#[cfg(test)]
mod tests;
