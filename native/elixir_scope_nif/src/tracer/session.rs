//! A trace session: the erl_tracer state shared by every traced process.
//!
//! The session resource is the `TracerState` the VM hands to `enabled/3`
//! and `trace/5` on the traced process's own scheduler. Each trace event is
//! checked against the session's [`Limits`], stamped, translated and pushed
//! into its pid's ring shard of the pipeline; no message is sent. The first
//! limit that trips stops the session: from then on `enabled/3` answers
//! `remove` (each tracee drops the tracer at its next event) and the owning
//! Elixir process is sent `{:elixir_scope_trace_stopped, reason}` once, so it
//! clears the trace flags and patterns.
//!
//! Counters: every event reaching `trace/5` is refused by the limits, or
//! admitted; an admitted event is captured, lost to a full ring
//! (`ring_full`), shed with its process under load (`shed`) or of a shape
//! we cannot read (`unreadable`). Captured events are derived from those
//! counts (one atomic less per event), and nothing is dropped uncounted.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use rustler::{Atom, Encoder, Env, LocalPid, NifMap, ResourceArc, Term};

use elixir_scope_core::capture::excluded::Excluded;
use elixir_scope_core::capture::limits::{Limits, LimitsConfig, StopReason};
use elixir_scope_core::capture::server_states::ServerStates;
use elixir_scope_core::cross_node::LocalNode;
use elixir_scope_core::event::{Event, EventHeader, EventKind};
use elixir_scope_core::pipeline::Refused;

use super::translate::{self, PayloadLimits, Pending, TraceMessage, Translated, Words};
use crate::atoms;
use crate::clock;
use crate::codec::event::{Decoder, Stamp};
use crate::codec::{layout, word};
use crate::resources::PipelineRes;

/// Processes whose callbacks in progress are remembered (for state changes).
const MAX_SERVER_PIDS: usize = 100_000;

/// Session options, flattened by `ElixirScope.Tracer`.
#[derive(NifMap)]
pub struct SessionConfig<'a> {
    max_events: u64,
    /// 0 = no rate limit.
    rate_events: u64,
    rate_window_ms: u64,
    duration_ms: u64,
    /// `nil` = capture no payloads.
    payload_bytes: Option<usize>,
    /// Never traced (the pipeline's own processes).
    excluded: Vec<Term<'a>>,
    /// GenServer modules whose callbacks yield `:state_change` events.
    servers: Vec<Atom>,
    /// Count events and do nothing else: the VM's floor, for benchmarks.
    count_only: bool,
}

pub struct TraceSession {
    pipeline: ResourceArc<PipelineRes>,
    owner: LocalPid,
    limits: Limits,
    payload_bytes: Option<usize>,
    excluded: Excluded,
    /// The trace tags recorded (atom words).
    wanted: [u64; 11],
    servers: Vec<u64>,
    /// This node, when a cluster session named it in the store: messages
    /// crossing nodes then get their fingerprint here (see
    /// `elixir_scope_core::cross_node`).
    local_node: Option<LocalNode>,
    /// This node's atom word, as the session started (0 if unnamed).
    node: u64,
    count_only: bool,
    states: ServerStates,
    /// Events seen in `count_only` mode (written on every event: on its
    /// own cache line).
    counted: CachePadded<AtomicU64>,
    // Of the events admitted by the limits, those not captured:
    ring_full: AtomicU64,
    shed: AtomicU64,
    unreadable: AtomicU64,
    state_changes: AtomicU64,
    lost_state_changes: AtomicU64,
}

// See resources.rs: every field keeps its invariants at each atomic step or
// lock release.
impl std::panic::RefUnwindSafe for TraceSession {}

impl TraceSession {
    pub fn new(pipeline: ResourceArc<PipelineRes>, owner: LocalPid, c: SessionConfig) -> Self {
        clock::calibrate();
        let now = Stamp::now();
        let ms = |v: u64| (v as i64).saturating_mul(1_000_000);
        // This node (named by trace_session_new), to resolve sends to its
        // names; and for a cluster session's exchange, fingerprints of
        // messages crossing nodes.
        let (local_node, node) = {
            let correlator = pipeline.pipeline.store().correlator();
            let named = correlator.local_node().cloned();
            let node = named.as_ref().map_or(0, |n| n.atom);
            (named.filter(|_| correlator.collecting()), node)
        };
        TraceSession {
            local_node,
            node,
            pipeline,
            owner,
            limits: Limits::new(
                LimitsConfig {
                    max_events: c.max_events,
                    rate: (c.rate_events > 0).then(|| (c.rate_events, ms(c.rate_window_ms))),
                    deadline: now.mono.saturating_add(ms(c.duration_ms)),
                },
                now.mono,
            ),
            payload_bytes: c.payload_bytes,
            excluded: Excluded::new(
                c.excluded
                    .iter()
                    .filter(|p| p.is_pid())
                    .map(|p| word(p.as_c_arg())),
            ),
            wanted: {
                let w = Words::get();
                [
                    w.call,
                    w.return_from,
                    w.exception_from,
                    w.send,
                    w.receive,
                    w.spawn,
                    w.exit,
                    w.link,
                    w.unlink,
                    w.send_to_non_existing_process,
                    word(atoms::trace_status().as_c_arg()),
                ]
            },
            servers: c.servers.iter().map(|a| word(a.as_c_arg())).collect(),
            count_only: c.count_only,
            states: ServerStates::new(MAX_SERVER_PIDS),
            counted: CachePadded::new(AtomicU64::new(0)),
            ring_full: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            state_changes: AtomicU64::new(0),
            lost_state_changes: AtomicU64::new(0),
        }
    }

    /// `enabled/3`: whether the VM should build this trace event.
    pub fn enabled(&self, tag: Term, tracee: Term) -> Atom {
        if self.limits.is_stopped() || self.excluded.contains(word(tracee.as_c_arg())) {
            return atoms::remove();
        }
        if self.wanted.contains(&word(tag.as_c_arg())) {
            atoms::trace()
        } else {
            atoms::discard()
        }
    }

    /// `trace/5`: records one trace event.
    pub fn record<'a>(
        &self,
        env: Env<'a>,
        tag: Term<'a>,
        tracee: Term<'a>,
        message: Term<'a>,
        opts: Term<'a>,
    ) {
        if self.count_only {
            self.counted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let stamp = Stamp::now();
        let admit = self.limits.admit(stamp.mono);
        if let Some(reason) = admit.trip {
            // The owner may already be gone; its monitor then stops us anyway.
            let _ = env.send(
                &self.owner,
                (atoms::elixir_scope_trace_stopped(), reason_atom(reason)),
            );
        }
        if !admit.record {
            return;
        }
        if !layout::is_local_pid(tracee) {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let m = TraceMessage {
            tag: word(tag.as_c_arg()),
            words: Words::get(),
            pid: word(tracee.as_c_arg()),
            node: self.node,
            message,
            opts,
            stamp,
        };
        let limits = PayloadLimits {
            data_limit: self.payload_bytes,
        };
        let Some(event) = translate::event(&m, limits) else {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Encodes with reused buffers (the decoder decodes nothing here).
        let mut encoder = Decoder::with_stamp(0, stamp);
        let change = match self.servers.is_empty() {
            true => None,
            false => self.track_server_state(&m, &event.header, limits, &mut encoder),
        };
        self.push(env, event, m.message, change, &mut encoder);
    }

    /// Queues a trace event, its payloads encoded in its ring slot, after
    /// the state change it yielded if any (so the change is correlated
    /// inside the callback).
    #[inline(always)]
    fn push(
        &self,
        env: Env,
        event: Translated,
        message: Term,
        state_change: Option<Event>,
        encoder: &mut Decoder,
    ) {
        let pipeline = &self.pipeline.pipeline;
        let mut batch = pipeline.begin_ingest(1 + state_change.is_some() as usize);
        if let Some(change) = state_change {
            let counter = match batch.push(change) {
                Ok(_) => &self.state_changes,
                Err(_) => &self.lost_state_changes,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let Translated { header, data, peer } = event;
        // SAFETY: pending terms are words of this callback's live terms.
        let term = |p: Pending| unsafe { Term::new(env, p.term) };
        let fill = |e: &mut Event| {
            if let Some(d) = data {
                encoder.payload_into(term(d), d.limit, &mut e.data);
            }
            if let Some(p) = peer {
                encoder.payload_into(term(p), p.limit, &mut e.peer);
            }
            if let Some(local) = &self.local_node {
                if local.half(e).is_some() {
                    e.fingerprint = message.hash_phash2().max(1);
                }
            }
        };
        match batch.push_with(header, fill) {
            Ok(_) => {}
            Err(Refused::Full) => {
                self.ring_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(Refused::Shed) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Remembers a server callback's old state on entry; on return yields
    /// the `:state_change` when the state differs.
    fn track_server_state(
        &self,
        m: &TraceMessage,
        event: &EventHeader,
        limits: PayloadLimits,
        encoder: &mut Decoder,
    ) -> Option<Event> {
        if event.kind == EventKind::ProcessExit {
            self.states.forget(event.pid);
        }
        let limit = limits.data_limit?;
        if !self.servers.contains(&event.module) || !translate::is_server_callback(event) {
            return None;
        }
        match event.kind {
            EventKind::FunctionCall => {
                let old = encoder.payload_within(translate::old_state(m)?, limit);
                self.states.enter(event.pid, old);
                None
            }
            EventKind::FunctionReturn => {
                let old = self.states.leave(event.pid)?;
                let new = encoder.payload_within(translate::new_state(m)?, limit);
                (new != old).then(|| Event {
                    kind: EventKind::StateChange,
                    data: translate::state_change_data(&old, &new),
                    ..event.into_event(0)
                })
            }
            EventKind::FunctionException => {
                self.states.leave(event.pid);
                None
            }
            _ => None,
        }
    }

    /// Stops the session; true if this call stopped it.
    pub fn stop(&self, reason: StopReason) -> bool {
        self.limits.stop(reason)
    }

    pub fn info<'a>(&self, env: Env<'a>) -> Term<'a> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (ring_full, unreadable) = (load(&self.ring_full), load(&self.unreadable));
        let shed = load(&self.shed);
        let captured = if self.count_only {
            load(&self.counted)
        } else {
            self.limits.admitted() - ring_full - shed - unreadable
        };
        let dropped =
            self.limits.refused() + ring_full + shed + unreadable + load(&self.lost_state_changes);
        crate::atom_map!(env, {
            "events" => captured,
            "state_changes" => load(&self.state_changes),
            "dropped" => dropped,
            "dropped_by_cause" => crate::atom_map!(env, {
                "after_stop" => self.limits.refused(),
                "buffer_full" => ring_full + load(&self.lost_state_changes),
                "unreadable" => unreadable,
                "shed" => shed,
            }),
            "stopped_because" => match self.limits.stopped_because() {
                Some(r) => reason_atom(r).encode(env),
                None => atoms::nil().encode(env),
            },
            "servers_in_callback" => self.states.len(),
            "untracked_callbacks" => self.states.untracked(),
        })
    }
}

pub fn reason_atom(r: StopReason) -> Atom {
    match r {
        StopReason::MaxEvents => atoms::max_events(),
        StopReason::RateLimit => atoms::rate_limit(),
        StopReason::Duration => atoms::duration(),
        StopReason::OwnerDown => atoms::owner_down(),
        StopReason::Requested => atoms::requested(),
    }
}

pub fn reason_of(a: Atom) -> Option<StopReason> {
    [
        StopReason::MaxEvents,
        StopReason::RateLimit,
        StopReason::Duration,
        StopReason::OwnerDown,
        StopReason::Requested,
    ]
    .into_iter()
    .find(|&r| reason_atom(r) == a)
}
