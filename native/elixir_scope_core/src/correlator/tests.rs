//! Correlator tests: hand-written cases, and a ground-truth simulator whose
//! random programs (nested calls with exceptions and missing returns,
//! spawns, messages with identical contents from several senders) are fed
//! in random interleavings that keep each pid's order.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::event::{EventKind as K, NO_ARITY};
use crate::payload::Payload;

/// Applies patches to the correlations handed out so far (as the store does).
#[derive(Default)]
struct Sink {
    out: HashMap<u64, Correlation>,
}

impl Sink {
    fn feed(&mut self, cor: &mut Correlator, e: &Event) -> Correlation {
        let mut patches = Vec::new();
        let c = cor.correlate(e, e.timestamp, &mut patches);
        self.out.insert(e.id, c.clone());
        for p in patches {
            if let Some(target) = self.out.get_mut(&p.id) {
                p.change.apply(target);
            }
        }
        c
    }

    fn links(&self, id: u64) -> Vec<(LinkKind, u64)> {
        let mut v: Vec<_> = self.out[&id]
            .links
            .iter()
            .map(|l| (l.kind, l.target))
            .collect();
        v.sort_by_key(|&(k, t)| (k as u8, t));
        v
    }
}

fn ev(id: u64, pid: u64, kind: K) -> Event {
    Event {
        id,
        timestamp: id as i64,
        wall_time: 0,
        pid,
        module: 0x10b,
        function: 0x20b,
        arity: 1,
        kind,
        ingest_stamped: false,
        data: Payload::empty(),
        peer: Payload::empty(),
        fingerprint: 0,
    }
}

fn call(id: u64, pid: u64, f: u64) -> Event {
    Event {
        function: f,
        ..ev(id, pid, K::FunctionCall)
    }
}

fn ret(id: u64, pid: u64, f: u64) -> Event {
    Event {
        function: f,
        ..ev(id, pid, K::FunctionReturn)
    }
}

fn msg(id: u64, pid: u64, kind: K, peer: u64, content: &[u8]) -> Event {
    Event {
        data: Payload::from_bytes(content),
        peer: if peer == 0 {
            Payload::empty()
        } else {
            Payload::pid(peer)
        },
        module: 0,
        function: 0,
        arity: NO_ARITY,
        ..ev(id, pid, kind)
    }
}

#[test]
fn call_and_return_share_a_correlation_id() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    let c1 = sink.feed(&mut cor, &call(1, 7, 1));
    let c2 = sink.feed(&mut cor, &call(2, 7, 2));
    let r2 = sink.feed(&mut cor, &ret(3, 7, 2));
    let r1 = sink.feed(&mut cor, &ret(4, 7, 1));
    assert_eq!((c1.correlation_id, c1.parent_id, c1.root_id), (1, 0, 1));
    assert_eq!((c2.parent_id, c2.root_id), (1, 1));
    assert_eq!(sink.links(2), vec![(LinkKind::CalledFrom, 1)]);
    assert_eq!(r2.correlation_id, 2);
    assert_eq!(sink.links(3), vec![(LinkKind::Completes, 2)]);
    assert_eq!((r1.correlation_id, r1.parent_id), (1, 0));
    assert_eq!(r2.correlation_type, Some(K::FunctionReturn));
    assert_eq!(cor.stats().success_rate(), 1.0);
}

#[test]
fn outer_return_closes_open_inner_calls_and_orphans_are_counted() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    sink.feed(&mut cor, &call(1, 7, 1));
    sink.feed(&mut cor, &call(2, 7, 2)); // tail call: never returns
    let r = sink.feed(&mut cor, &ret(3, 7, 1));
    assert_eq!(r.correlation_id, 1);
    assert_eq!(sink.out[&2].confidence, UNFINISHED);
    let orphan = sink.feed(&mut cor, &ret(4, 7, 9));
    assert_eq!(orphan.confidence, 0.0);
    assert!(orphan.links.is_empty());
    let s = cor.stats();
    assert_eq!((s.unfinished_calls, s.orphaned_returns), (1, 1));
    assert!(s.success_rate() < 1.0);
}

#[test]
fn max_depth_bounds_the_stack() {
    let config = CorrelatorConfig {
        max_depth: 2,
        ..Default::default()
    };
    let (mut cor, mut sink) = (Correlator::new(config), Sink::default());
    for id in 1..=4 {
        sink.feed(&mut cor, &call(id, 7, id));
    }
    assert_eq!(cor.stats().depth_overflows, 2);
    let r = sink.feed(&mut cor, &ret(5, 7, 2));
    assert_eq!(r.correlation_id, 2);
}

#[test]
fn receive_before_send_is_patched_when_the_send_arrives() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    let r = sink.feed(&mut cor, &msg(2, 20, K::MessageReceive, 0, b"hi"));
    assert_eq!((r.correlation_id, r.confidence), (0, 0.0));
    sink.feed(&mut cor, &msg(1, 10, K::MessageSend, 20, b"hi"));
    assert_eq!(sink.out[&2].correlation_id, 1);
    assert_eq!(sink.links(2), vec![(LinkKind::Receives, 1)]);
    assert_eq!(sink.out[&2].confidence, 1.0);
}

#[test]
fn identical_messages_from_two_senders_are_never_certain() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    // Receiver 30 gets "x" from 10 and from 20; it does not know the senders.
    sink.feed(&mut cor, &msg(1, 10, K::MessageSend, 30, b"x"));
    let first = sink.feed(&mut cor, &msg(3, 30, K::MessageReceive, 0, b"x"));
    assert_eq!(first.confidence, 1.0, "one sender seen so far");
    sink.feed(&mut cor, &msg(2, 20, K::MessageSend, 30, b"x"));
    sink.feed(&mut cor, &msg(4, 30, K::MessageReceive, 0, b"x"));
    assert!(sink.out[&3].confidence < 1.0, "downgraded once ambiguous");
    assert!(sink.out[&4].confidence < 1.0);
    assert!(cor.stats().ambiguous_matches >= 1);
}

#[test]
fn messages_crossing_nodes_are_set_aside_once_the_node_is_named() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    let from_node_b = |id| Event {
        peer: Payload::from_bytes(&[crate::payload::tag::ATOM, 0x7b]),
        ..msg(id, 30, K::MessageReceive, 0, b"x")
    };
    // Before: a receive from node B is blind and takes the pending local send.
    sink.feed(&mut cor, &msg(1, 10, K::MessageSend, 30, b"x"));
    assert_eq!(sink.feed(&mut cor, &from_node_b(2)).correlation_id, 1);

    cor.collect_crossing_as(crate::cross_node::LocalNode::new(0x4b, b"a@h"));
    sink.feed(&mut cor, &msg(3, 10, K::MessageSend, 30, b"x"));
    let r = sink.feed(&mut cor, &from_node_b(4));
    assert_eq!(
        (r.correlation_id, r.confidence, r.links.len()),
        (0, 0.0, 0),
        "left for the exchange"
    );
    let local = sink.feed(&mut cor, &msg(5, 30, K::MessageReceive, 10, b"x"));
    assert_eq!(local.correlation_id, 3, "the local pair still pairs");
    let crossing = cor.crossing();
    assert_eq!((crossing.sends.len(), crossing.dropped), (0, 0));
    assert_eq!(
        crossing.receives.iter().map(|h| h.id).collect::<Vec<_>>(),
        [4]
    );
    assert_eq!(cor.stats().cross_node_receives, 1);

    // Once the session ended, messages from other nodes are counted, and
    // neither set aside nor waiting here: no local send is theirs.
    cor.stop_collecting();
    sink.feed(&mut cor, &msg(7, 10, K::MessageSend, 30, b"x"));
    let r = sink.feed(&mut cor, &from_node_b(8));
    assert_eq!((r.correlation_id, r.links.len()), (0, 0), "not blind");
    assert_eq!(cor.stats().cross_node_receives, 2);
    assert_eq!(cor.crossing().receives.len(), 1);
    let local = sink.feed(&mut cor, &msg(9, 30, K::MessageReceive, 10, b"x"));
    assert_eq!(local.correlation_id, 7, "the local send waited for it");
}

/// A node that knows its name and runs no cluster session keeps nothing
/// of its messages with other nodes: a send to a remote pid or alias, a
/// receive from another node are counted, never pending, never set
/// aside, so they cost the drain no state, whatever their number.
#[test]
fn messages_with_other_nodes_keep_no_state_outside_a_cluster_session() {
    use crate::cross_node::test_support::external;
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    cor.set_local_node(Some(crate::cross_node::LocalNode {
        atom: 0x4b,
        name: b"a@h".to_vec(),
    }));
    for i in 0..1000u64 {
        let to_pid = Event {
            peer: external("b@h", false, 1),
            ..msg(4 * i + 1, 10, K::MessageSend, 0, &i.to_be_bytes())
        };
        let to_alias = Event {
            peer: external("b@h", true, 2),
            ..msg(4 * i + 2, 10, K::MessageSend, 0, &i.to_be_bytes())
        };
        let from_b = Event {
            peer: Payload::from_bytes(&[crate::payload::tag::ATOM, 0x7b]),
            ..msg(4 * i + 3, 10, K::MessageReceive, 0, &i.to_be_bytes())
        };
        for e in [to_pid, to_alias, from_b] {
            sink.feed(&mut cor, &e);
        }
    }
    let s = cor.stats();
    assert_eq!((s.cross_node_sends, s.cross_node_receives), (2000, 1000));
    assert_eq!(
        (s.pending_sends, s.unaddressed_sends, s.linkable),
        (0, 0, 0)
    );
    assert_eq!(
        cor.crossing().sends.len() + cor.crossing().receives.len(),
        0
    );
    // A local alias (a reference of this node) is still a local send.
    let to_local_alias = Event {
        peer: external("a@h", true, 3),
        ..msg(9001, 10, K::MessageSend, 0, b"reply")
    };
    sink.feed(&mut cor, &to_local_alias);
    assert_eq!(cor.stats().pending_sends, 1);
}

#[test]
fn a_known_sender_makes_the_match_exact() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    sink.feed(&mut cor, &msg(1, 10, K::MessageSend, 30, b"x"));
    sink.feed(&mut cor, &msg(2, 20, K::MessageSend, 30, b"x"));
    let r = sink.feed(&mut cor, &msg(3, 30, K::MessageReceive, 20, b"x"));
    assert_eq!((r.correlation_id, r.confidence), (2, 1.0));
}

#[test]
fn sends_to_an_alias_or_name_match_receives_that_know_their_sender() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    // Send first: 10 replies to an alias (peer 0 here: not a pid).
    sink.feed(&mut cor, &msg(1, 10, K::MessageSend, 0, b"reply"));
    let r = sink.feed(&mut cor, &msg(2, 30, K::MessageReceive, 10, b"reply"));
    assert_eq!((r.correlation_id, r.confidence), (1, 1.0));
    // Receive first: it waits by channel and by sender, and is patched.
    sink.feed(&mut cor, &msg(4, 30, K::MessageReceive, 10, b"again"));
    sink.feed(&mut cor, &msg(3, 10, K::MessageSend, 0, b"again"));
    assert_eq!(sink.links(4), vec![(LinkKind::Receives, 3)]);
    // Matched through its channel, a receive leaves the by-sender queue too.
    sink.feed(&mut cor, &msg(6, 30, K::MessageReceive, 10, b"once"));
    sink.feed(&mut cor, &msg(5, 10, K::MessageSend, 30, b"once"));
    sink.feed(&mut cor, &msg(7, 10, K::MessageSend, 0, b"once"));
    assert_eq!(sink.links(6), vec![(LinkKind::Receives, 5)]);
    let s = cor.stats();
    assert_eq!(
        (s.unaddressed_sends, s.pending_sends, s.pending_receives),
        (3, 1, 0)
    );
}

/// A process sends the same message by name to two processes (the
/// tracer records `{name, holder}`): each receive takes the send to its
/// own process, certain, in whatever order the receives come. (By sender
/// alone, the first receive would take the first send.)
#[test]
fn a_send_to_a_name_pairs_with_the_receive_of_the_name_holder() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    let to_name = |id, name: u64, holder: u64| {
        let mut b = vec![crate::payload::tag::TUPLE, 2, crate::payload::tag::ATOM];
        crate::payload::varint::push(&mut b, name);
        b.push(crate::payload::tag::PID);
        crate::payload::varint::push(&mut b, holder);
        Event {
            peer: Payload::from_bytes(&b),
            ..msg(id, 10, K::MessageSend, 0, b"tick")
        }
    };
    sink.feed(&mut cor, &to_name(1, 0x80b, 30));
    sink.feed(&mut cor, &to_name(2, 0x90b, 40));
    let at_40 = sink.feed(&mut cor, &msg(3, 40, K::MessageReceive, 10, b"tick"));
    let at_30 = sink.feed(&mut cor, &msg(4, 30, K::MessageReceive, 10, b"tick"));
    assert_eq!((at_40.correlation_id, at_40.confidence), (2, 1.0));
    assert_eq!((at_30.correlation_id, at_30.confidence), (1, 1.0));
    assert_eq!(cor.stats().unaddressed_sends, 0);
}

/// Halves wait alone (a lone map entry) until a second half, a second
/// sender or a blind match must be kept with them (a full entry): both
/// forms pair the same, and leave nothing behind once matched.
#[test]
fn halves_waiting_alone_or_together_pair_the_same_and_leave_nothing_behind() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    let linked = |sink: &Sink, id: u64| {
        let c = &sink.out[&id];
        (c.correlation_id, c.confidence)
    };
    // Two receives from 10 wait by sender, then two replies by alias:
    // the first reply had two candidates.
    sink.feed(&mut cor, &msg(1, 30, K::MessageReceive, 10, b"r"));
    sink.feed(&mut cor, &msg(2, 30, K::MessageReceive, 10, b"r"));
    sink.feed(&mut cor, &msg(3, 10, K::MessageSend, 0, b"r"));
    sink.feed(&mut cor, &msg(4, 10, K::MessageSend, 0, b"r"));
    assert_eq!([linked(&sink, 1), linked(&sink, 2)], [(3, 0.5), (4, 1.0)]);
    // Two replies wait, then their receives.
    sink.feed(&mut cor, &msg(5, 10, K::MessageSend, 0, b"s"));
    sink.feed(&mut cor, &msg(6, 10, K::MessageSend, 0, b"s"));
    let r7 = sink.feed(&mut cor, &msg(7, 30, K::MessageReceive, 10, b"s"));
    let r8 = sink.feed(&mut cor, &msg(8, 30, K::MessageReceive, 10, b"s"));
    assert_eq!([r7.correlation_id, r8.correlation_id], [5, 6]);
    // Sends from two senders wait in one channel: each receive that
    // knows its sender takes that sender's, whatever the order.
    sink.feed(&mut cor, &msg(9, 10, K::MessageSend, 30, b"t"));
    sink.feed(&mut cor, &msg(10, 20, K::MessageSend, 30, b"t"));
    let r11 = sink.feed(&mut cor, &msg(11, 30, K::MessageReceive, 20, b"t"));
    let r12 = sink.feed(&mut cor, &msg(12, 30, K::MessageReceive, 10, b"t"));
    assert_eq!([r11.correlation_id, r12.correlation_id], [10, 9]);
    // One receive waits alone, then its reply.
    sink.feed(&mut cor, &msg(20, 30, K::MessageReceive, 10, b"v"));
    sink.feed(&mut cor, &msg(21, 10, K::MessageSend, 0, b"v"));
    assert_eq!(linked(&sink, 20), (21, 1.0));
    assert_eq!(cor.messages.entries(), 0, "every pair matched");
    // A blind receive takes a send waiting alone, certain while one
    // sender was seen; a second sender lowers it.
    sink.feed(&mut cor, &msg(13, 10, K::MessageSend, 30, b"u"));
    let r14 = sink.feed(&mut cor, &msg(14, 30, K::MessageReceive, 0, b"u"));
    assert_eq!((r14.correlation_id, r14.confidence), (13, 1.0));
    sink.feed(&mut cor, &msg(15, 20, K::MessageSend, 30, b"u"));
    assert_eq!(linked(&sink, 14), (13, 0.5));
    let s = cor.stats();
    assert_eq!((s.pending_sends, s.pending_receives), (1, 0));
    assert_eq!(cor.messages.entries(), 2, "send 15 and its channel");
}

#[test]
fn root_call_after_receive_is_caused_by_it_and_chains_back() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    sink.feed(&mut cor, &call(1, 10, 1)); // caller's call
    sink.feed(&mut cor, &msg(2, 10, K::MessageSend, 20, b"req"));
    sink.feed(&mut cor, &msg(3, 20, K::MessageReceive, 0, b"req"));
    sink.feed(&mut cor, &call(4, 20, 5)); // handle_call
                                          // Inside it, a nested call to a third server and its reply.
    sink.feed(&mut cor, &msg(6, 20, K::MessageSend, 30, b"nested"));
    sink.feed(&mut cor, &msg(7, 20, K::MessageReceive, 30, b"reply"));
    let sc = sink.feed(&mut cor, &ev(5, 20, K::StateChange));
    assert_eq!(sink.links(4), vec![(LinkKind::CausedBy, 3)]);
    assert_eq!(
        sink.links(5),
        vec![(LinkKind::CausedBy, 3)],
        "the request being handled, not the nested reply"
    );
    assert_eq!(sc.parent_id, 4);
    let chain = chain_of(&sink, 5);
    assert_eq!(chain, vec![1, 2, 3, 5]);
}

fn chain_of(sink: &Sink, id: u64) -> Vec<u64> {
    let mut chain = vec![id];
    let mut at = id;
    while let Some(prev) = step_back(&sink.out[&at], at) {
        if chain.contains(&prev) {
            break;
        }
        chain.push(prev);
        at = prev;
    }
    chain.reverse();
    chain
}

#[test]
fn child_events_before_the_spawn_are_linked_late() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    sink.feed(&mut cor, &call(2, 50, 1)); // child's first root call
    let spawn = msg(1, 40, K::ProcessSpawn, 50, b"mfa");
    sink.feed(&mut cor, &spawn);
    assert_eq!(sink.links(2), vec![(LinkKind::SpawnedBy, 1)]);
    assert_eq!(cor.process_tree(), vec![(40, 50, 1)]);
    sink.feed(&mut cor, &ev(3, 50, K::ProcessExit));
    assert_eq!(
        sink.out[&2].confidence, UNFINISHED,
        "exit closes open calls"
    );
}

#[test]
fn cleanup_drops_state_older_than_the_ttl() {
    let config = CorrelatorConfig {
        ttl_ns: 100,
        ..Default::default()
    };
    let (mut cor, mut sink) = (Correlator::new(config), Sink::default());
    sink.feed(&mut cor, &msg(1, 10, K::MessageSend, 20, b"never received"));
    assert_eq!(cor.stats().pending_sends, 1);
    assert!(cor.cleanup(1_000) >= 1);
    let s = cor.stats();
    assert_eq!((s.pending_sends, s.contexts), (0, 0));
    assert!(s.expired >= 1);
}

#[test]
fn max_entries_evicts_and_counts() {
    let config = CorrelatorConfig {
        max_entries: 10,
        ..Default::default()
    };
    let (mut cor, mut sink) = (Correlator::new(config), Sink::default());
    for i in 1..=100u64 {
        let mut e = msg(i, 10, K::MessageSend, 20, &i.to_le_bytes());
        e.timestamp = i as i64 * 1_000_000_000;
        sink.feed(&mut cor, &e);
    }
    let s = cor.stats();
    assert!(s.pending_sends <= 10, "{s:?}");
    assert!(s.evicted > 0);
}

/// Past the bound the oldest state goes, down to half the bound: an
/// eviction (its passes over all the state) comes once per half a bound
/// of new state, not at every event once the bound is full, and what
/// stays is the youngest.
#[test]
fn eviction_goes_down_to_half_the_bound_oldest_first() {
    let config = CorrelatorConfig {
        max_entries: 1000,
        ..Default::default()
    };
    let (mut cor, mut sink) = (Correlator::new(config), Sink::default());
    let (mut evictions, mut evicted) = (0, 0);
    let send = |i: u64| Event {
        timestamp: i as i64 * 1_000,
        ..msg(i, 10, K::MessageSend, 20, &i.to_le_bytes())
    };
    for i in 1..=10_000u64 {
        // Each waits for its receive: a pending send and its channel.
        sink.feed(&mut cor, &send(i));
        let s = cor.stats();
        if s.evicted > evicted {
            (evictions, evicted) = (evictions + 1, s.evicted);
            assert!(s.pending_sends <= 250, "down to half: {s:?}");
        }
    }
    assert!((10..=60).contains(&evictions), "{evictions} evictions");
    // The youngest sends still wait; the oldest went.
    let receive = |i: u64| Event {
        timestamp: 10_001_000,
        ..msg(20_000 + i, 20, K::MessageReceive, 10, &i.to_le_bytes())
    };
    assert_eq!(sink.feed(&mut cor, &receive(10_000)).correlation_id, 10_000);
    assert_eq!(sink.feed(&mut cor, &receive(1)).correlation_id, 0);
}

#[test]
fn ages_keep_the_youngest_buckets_that_fit() {
    let mut ages = Ages::default();
    let now = 1_000;
    // Ages 0, 1, 2, 3, 4..7 (x2), 100.
    for at in [1_000, 999, 998, 997, 996, 993, 900] {
        ages.add(now, at);
    }
    assert_eq!(ages.cutoff(now, 7), i64::MIN, "all fit");
    assert_eq!(ages.cutoff(now, 6), 937, "ages below 64 stay");
    assert_eq!(ages.cutoff(now, 5), 997, "ages below 4 stay");
    assert_eq!(ages.cutoff(now, 3), 999, "ages below 2 stay");
    assert_eq!(ages.cutoff(now, 0), i64::MAX, "none fits");
}

// ---------------------------------------------------------------------------
// Ground truth.

/// What each event should be linked to.
#[derive(Default)]
struct Truth {
    /// return id -> call id (only for returns of calls that were open).
    completes: HashMap<u64, u64>,
    /// call id -> enclosing call id.
    called_from: HashMap<u64, u64>,
    /// receive id -> (send id, unambiguous).
    receives: HashMap<u64, (u64, bool)>,
    /// child's first root call id -> spawn id.
    spawned_by: HashMap<u64, u64>,
}

#[derive(Clone, Debug)]
enum Step {
    Call(u8),
    Return,
    Exception,
    /// The innermost call's return is lost (a tail call).
    LoseReturn,
    Send {
        to: u8,
        content: u8,
    },
    /// A send to the receiver's alias (or name): not addressed to a pid.
    SendAlias {
        to: u8,
        content: u8,
    },
    Receive,
    Spawn,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4).prop_map(Step::Call),
        3 => Just(Step::Return),
        1 => Just(Step::Exception),
        1 => Just(Step::LoseReturn),
        3 => (0u8..6, 0u8..3).prop_map(|(to, content)| Step::Send { to, content }),
        2 => (0u8..6, 0u8..2).prop_map(|(to, content)| Step::SendAlias { to, content }),
        3 => Just(Step::Receive),
        1 => Just(Step::Spawn),
    ]
}

/// Runs the programs in a global order (picked by `turns`), producing each
/// pid's event stream and the ground truth. A pid's receives either all
/// know their sender or none do (as with a tracer's receive match spec).
///
/// Sends by alias go only to pids whose receives know their sender (no
/// other receive can take them), with contents of their own, each
/// (sender, content) to one receiver: the correlator pairs them by sender
/// and order alone, certain only when that sender sent that content by
/// alias once.
///
/// Where the truth itself is ambiguous it is left out: a call whose return
/// was lost stays open in the correlator's view (a "ghost" frame), so a
/// later return or call next to a ghost with the same function has no
/// unambiguous answer.
fn simulate(
    programs: &[Vec<Step>],
    turns: &[u8],
    knows_sender: &[bool],
) -> (Vec<Vec<Event>>, Truth) {
    let mut pids: Vec<u64> = (0..programs.len() as u64)
        .map(|i| 0x1000 + i * 16)
        .collect();
    let mut streams: Vec<Vec<Event>> = vec![Vec::new(); programs.len()];
    let mut stacks: Vec<Vec<(u64, u64)>> = vec![Vec::new(); programs.len()];
    // The correlator's view of each stack: real frames and ghosts.
    let mut shadows: Vec<Vec<(u64, u64)>> = vec![Vec::new(); programs.len()];
    let mut mailboxes: Vec<std::collections::VecDeque<(u64, u64, u8)>> =
        vec![Default::default(); programs.len()];
    let mut pcs = vec![0usize; programs.len()];
    let mut truth = Truth::default();
    let mut next_id = 1u64;
    // (receiver, content) -> senders, to know which receives are ambiguous.
    let mut senders: HashMap<(usize, u8), Vec<u64>> = HashMap::new();
    let mut pending_receives: Vec<(u64, usize, u8, u64)> = Vec::new();
    // (sender, content) -> its receiver and how many were sent, by alias.
    let mut by_alias: HashMap<(u64, u8), (usize, usize)> = HashMap::new();
    let mut seen_root_call = vec![false; programs.len()];
    let mut spawned_by: Vec<u64> = vec![0; programs.len()];
    let mut id = || {
        next_id += 1;
        next_id - 1
    };
    let total: usize = programs.iter().map(Vec::len).sum();
    for t in 0..total * 2 {
        let p = turns.get(t % turns.len().max(1)).copied().unwrap_or(0) as usize % programs.len();
        let Some(step) = programs[p].get(pcs[p]) else {
            continue;
        };
        pcs[p] += 1;
        let pid = pids[p];
        match step.clone() {
            Step::Call(f) => {
                let i = id();
                let e = call(i, pid, f as u64 + 1);
                match stacks[p].last() {
                    Some(&(parent, _)) if shadows[p].last() == stacks[p].last() => {
                        truth.called_from.insert(i, parent);
                    }
                    Some(_) => {}
                    None if !seen_root_call[p] => {
                        seen_root_call[p] = true;
                        if spawned_by[p] != 0 {
                            truth.spawned_by.insert(i, spawned_by[p]);
                        }
                    }
                    None => {}
                }
                stacks[p].push((i, f as u64 + 1));
                shadows[p].push((i, f as u64 + 1));
                streams[p].push(e);
            }
            Step::Return | Step::Exception => {
                let Some((call_id, f)) = stacks[p].pop() else {
                    continue;
                };
                let i = id();
                let mut e = ret(i, pid, f);
                if matches!(step, Step::Exception) {
                    e.kind = K::FunctionException;
                }
                let shadow = &mut shadows[p];
                let innermost = shadow.iter().rposition(|&(_, g)| g == f);
                if innermost.map(|k| shadow[k].0) == Some(call_id) {
                    truth.completes.insert(i, call_id);
                }
                // The correlator closes its innermost match and all above it.
                shadow.truncate(innermost.unwrap_or(shadow.len()));
                streams[p].push(e);
            }
            Step::LoseReturn => {
                stacks[p].pop();
            }
            Step::Send { to, content } => {
                let q = to as usize % programs.len();
                let i = id();
                streams[p].push(msg(i, pid, K::MessageSend, pids[q], &[content]));
                mailboxes[q].push_back((i, pid, content));
                let s = senders.entry((q, content)).or_default();
                if !s.contains(&pid) {
                    s.push(pid);
                }
            }
            Step::SendAlias { to, content } => {
                let q = to as usize % programs.len();
                let content = 100 + content;
                let sent = by_alias.entry((pid, content)).or_insert((q, 0));
                if !knows_sender[q % knows_sender.len()] || sent.0 != q {
                    continue;
                }
                sent.1 += 1;
                let i = id();
                streams[p].push(msg(i, pid, K::MessageSend, 0, &[content]));
                mailboxes[q].push_back((i, pid, content));
            }
            Step::Receive => {
                let know_sender = knows_sender[p % knows_sender.len()];
                let Some((send_id, sender, content)) = mailboxes[p].pop_front() else {
                    continue;
                };
                let i = id();
                let peer = if know_sender { sender } else { 0 };
                streams[p].push(msg(i, pid, K::MessageReceive, peer, &[content]));
                pending_receives.push((i, p, content, sender));
                truth.receives.insert(i, (send_id, know_sender));
            }
            Step::Spawn => {
                // The child is a new pid with an empty program of its own:
                // reuse a pid that has not run anything yet, if any.
                let Some(q) = (0..programs.len()).find(|&q| {
                    q != p && pcs[q] == 0 && spawned_by[q] == 0 && streams[q].is_empty()
                }) else {
                    continue;
                };
                let i = id();
                streams[p].push(msg(i, pid, K::ProcessSpawn, pids[q], b"mfa"));
                spawned_by[q] = i;
            }
        }
    }
    // A blind receive is unambiguous when only one sender ever sent that
    // content to that receiver; one sent by alias, when its sender sent
    // that content by alias once.
    for (i, p, content, sender) in pending_receives {
        let entry = truth.receives.get_mut(&i).unwrap();
        if content >= 100 {
            entry.1 = by_alias[&(sender, content)].1 == 1;
        } else if !entry.1 {
            entry.1 = senders[&(p, content)].len() == 1;
        }
    }
    pids.clear();
    (streams, truth)
}

/// Interleaves the streams in an order picked by `picks`, keeping each
/// stream's own order.
fn interleave(streams: &[Vec<Event>], picks: &[u8]) -> Vec<Event> {
    let mut at = vec![0usize; streams.len()];
    let mut out = Vec::new();
    let mut k = 0;
    while out.len() < streams.iter().map(Vec::len).sum::<usize>() {
        let mut s =
            picks.get(k % picks.len().max(1)).copied().unwrap_or(0) as usize % streams.len();
        k += 1;
        while at[s] == streams[s].len() {
            s = (s + 1) % streams.len();
        }
        out.push(streams[s][at[s]].clone());
        at[s] += 1;
    }
    out
}

fn check_against_truth(sink: &Sink, truth: &Truth) -> Result<(), TestCaseError> {
    for (&r, &c) in &truth.completes {
        prop_assert_eq!(
            sink.out[&r].correlation_id,
            c,
            "return {} completes {}",
            r,
            c
        );
        prop_assert!(sink.links(r).contains(&(LinkKind::Completes, c)));
    }
    for (&c, &parent) in &truth.called_from {
        prop_assert!(
            sink.links(c).contains(&(LinkKind::CalledFrom, parent)),
            "call {} from {}: {:?}",
            c,
            parent,
            sink.links(c)
        );
    }
    for (&r, &(send, certain)) in &truth.receives {
        let got = &sink.out[&r];
        let linked = sink.links(r).contains(&(LinkKind::Receives, send));
        if certain {
            prop_assert!(linked, "receive {} of send {}: {:?}", r, send, got);
            prop_assert_eq!(got.confidence, 1.0);
        } else if !linked {
            prop_assert!(got.confidence < 1.0, "wrong link at 1.0: {} {:?}", r, got);
        }
    }
    for (&c, &spawn) in &truth.spawned_by {
        prop_assert!(sink.links(c).contains(&(LinkKind::SpawnedBy, spawn)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn links_match_the_ground_truth_in_any_per_pid_order(
        programs in prop::collection::vec(prop::collection::vec(step(), 0..40), 2..6),
        turns in prop::collection::vec(any::<u8>(), 1..64),
        picks in prop::collection::vec(any::<u8>(), 1..64),
        knows_sender in prop::collection::vec(any::<bool>(), 1..6),
    ) {
        let (streams, truth) = simulate(&programs, &turns, &knows_sender);
        let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
        for e in interleave(&streams, &picks) {
            sink.feed(&mut cor, &e);
        }
        check_against_truth(&sink, &truth)?;
    }
}

#[test]
fn distinct_messages_leave_nothing_behind_once_matched() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    // Request/reply with a distinct message each time, both arrival orders.
    for i in 0..1000u64 {
        let body = i.to_le_bytes();
        let (send, receive) = (
            msg(2 * i + 1, 10, K::MessageSend, 30, &body),
            msg(2 * i + 2, 30, K::MessageReceive, 10, &body),
        );
        if i % 2 == 0 {
            sink.feed(&mut cor, &send);
            sink.feed(&mut cor, &receive);
        } else {
            sink.feed(&mut cor, &receive);
            sink.feed(&mut cor, &send);
        }
        assert_eq!(sink.out[&(2 * i + 2)].correlation_id, 2 * i + 1);
    }
    let s = cor.stats();
    assert_eq!(
        (s.pending_sends, s.pending_receives, s.linked),
        (0, 0, 1000)
    );
    assert_eq!(
        cor.messages.entries(),
        0,
        "no channel kept for a matched message"
    );
}

#[test]
fn the_dump_shows_open_calls_and_pending_halves_by_age_and_force_cleanup_drops_them() {
    let (mut cor, mut sink) = (Correlator::new(Default::default()), Sink::default());
    let s = 1_000_000_000;
    let call = |id: u64, pid: u64| {
        let mut e = msg(id, pid, K::FunctionCall, 0, b"");
        e.module = 0x10b;
        e.function = 0x20b;
        e
    };
    for (id, pid) in [(1, 10), (2, 10), (3, 20)] {
        let e = call(id, pid);
        sink.feed(&mut cor, &e);
    }
    let mut old = msg(4, 10, K::MessageSend, 30, b"old");
    old.timestamp = 0;
    sink.feed(&mut cor, &old);
    let mut recent = msg(5, 30, K::MessageReceive, 20, b"recent");
    recent.timestamp = 59 * s;
    sink.feed(&mut cor, &recent);
    let d = cor.dump(60 * s);
    assert_eq!(d.open_calls, vec![(10, 2), (20, 1)]);
    assert_eq!(d.pending_sends_by_age, [0, 0, 0, 1], "sent 60 s ago");
    assert_eq!(d.pending_receives_by_age, [0, 1, 0, 0], "received 1 s ago");
    // The old send and the contexts idle since before 30 s go.
    assert!(cor.force_cleanup(30 * s) >= 1);
    let d = cor.dump(60 * s);
    assert_eq!(d.pending_sends_by_age, [0; 4]);
    assert_eq!(
        d.pending_receives_by_age,
        [0, 1, 0, 0],
        "the recent receive stays"
    );
    assert!(cor.force_cleanup(i64::MAX) >= 1);
    assert_eq!(cor.dump(60 * s).pending_receives_by_age, [0; 4]);
    assert!(cor.stats().evicted >= 2);
}
