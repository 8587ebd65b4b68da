//! The cluster exchange's NIFs (see `elixir_scope_core::cross_node`).
//!
//! `ElixirScope.Cluster.Local` calls them on each node: name the node
//! (`cross_node_set_local`), hand over its sends to one node
//! (`cross_node_take_sends`), pair its receives with the sends taken from
//! the others and link them (`cross_node_link`), and link its sends back
//! (`cross_node_link_back`). Each call first turns the halves the workers
//! set aside since the last one into node-independent keys ([`Keys`]:
//! atom names and pids' external format need the VM, so this happens here
//! with a cache per call, not in the workers). A half without a
//! fingerprint (ingested from Elixir, not traced) gets the `phash2` of its
//! stored message, as the tracer takes it.

use rustler::{Atom, Binary, Encoder, Env, NifResult, OwnedBinary, ResourceArc, Term};

use elixir_scope_core::cross_node::matcher::{Matched, ReceiveHalf};
use elixir_scope_core::cross_node::wire::{
    etf_key, name_key, node_key, LinkBack, LinkBackBatch, SendBatch, SendHalf, To,
};
use elixir_scope_core::cross_node::{Destination, Exchange, InHalf, LocalNode, Origin, OutHalf};
use elixir_scope_core::event::LinkKind;
use elixir_scope_core::hash::WordMap;
use elixir_scope_core::store::SharedStore;

use crate::atoms;
use crate::codec::{from_word, term, word};
use crate::resources::StoreRes;

/// Node-independent keys of this VM's atom and pid words, each built once
/// per call.
struct Keys<'a> {
    env: Env<'a>,
    pids: Memo,
    names: Memo,
    nodes: Memo,
}

/// Keys by word, and the last one looked up (runs of halves mostly share
/// their process and node; 0 is no term word).
#[derive(Default)]
struct Memo {
    keys: WordMap<u64, u64>,
    last: (u64, u64),
}

impl Memo {
    fn get(&mut self, w: u64, key: impl FnOnce() -> u64) -> u64 {
        if self.last.0 != w {
            self.last = (w, *self.keys.entry(w).or_insert_with(key));
        }
        self.last.1
    }
}

impl<'a> Keys<'a> {
    fn new(env: Env<'a>) -> Self {
        Keys {
            env,
            pids: Memo::default(),
            names: Memo::default(),
            nodes: Memo::default(),
        }
    }

    fn external(env: Env, w: u64) -> OwnedBinary {
        // SAFETY: atom and local pid words are immediates, valid in any env.
        unsafe { Term::new(env, from_word(w)) }.to_binary()
    }

    /// The `etf_key` of a local pid word.
    fn pid(&mut self, w: u64) -> u64 {
        let env = self.env;
        (self.pids).get(w, || etf_key(Self::external(env, w).as_slice()))
    }

    /// The `name_key` of an atom word.
    fn name(&mut self, w: u64) -> u64 {
        let env = self.env;
        (self.names).get(w, || name_key(Self::external(env, w).as_slice()))
    }

    /// The `node_key` of a node's atom word.
    fn node(&mut self, w: u64) -> u64 {
        let env = self.env;
        (self.nodes).get(w, || node_key(atom_text(Self::external(env, w).as_slice())))
    }

    /// A send's destination node (its `node_key`) and record.
    fn send_half(&mut self, h: &OutHalf, fingerprint: u32) -> (u64, SendHalf) {
        let (node, to) = match h.to {
            Destination::Pid { key, node } => (node, To::Pid(key)),
            Destination::Alias { node } => (node, To::Node),
            Destination::Named { name, node } => (self.node(node), To::Name(self.name(name))),
        };
        let half = SendHalf {
            id: h.id,
            sender: self.pid(h.sender),
            to,
            fingerprint,
        };
        (node, half)
    }

    fn receive_half(&mut self, h: &InHalf, fingerprint: u32) -> ReceiveHalf {
        let (node, sender) = match h.from {
            Origin::Node(atom) => (self.node(atom), 0),
            Origin::Pid { key, node } => (node, key),
        };
        ReceiveHalf {
            id: h.id,
            at: h.at,
            receiver: self.pid(h.receiver),
            node,
            sender,
            fingerprint,
        }
    }
}

/// An atom's text from its external format (131, a tag, a 1- or 2-byte
/// length): what pids and references of that node carry as its name.
fn atom_text(etf: &[u8]) -> &[u8] {
    match etf {
        [131, 115 | 119, _, name @ ..] | [131, 100 | 118, _, _, name @ ..] => name,
        _ => &[],
    }
}

/// The `phash2` of the stored messages of `ids`: the fingerprint of
/// halves the tracer did not take (an event no longer stored has none).
fn stored_fingerprints(env: Env, store: &SharedStore, ids: &[u64]) -> WordMap<u64, u32> {
    let mut out = WordMap::default();
    if ids.is_empty() {
        return out;
    }
    let s = store.read();
    s.visit(&s.hits_of(ids), |v| {
        out.insert(v.id, term::decode(env, v.data).hash_phash2().max(1));
    });
    out
}

/// Each half's fingerprint, as taken or from its stored message (`bare`:
/// some halves may have none).
fn fingerprints(
    env: Env,
    store: &SharedStore,
    halves: impl Iterator<Item = (u64, u32)>,
    bare: bool,
) -> impl Fn(u64, u32) -> Option<u32> {
    let missing: Vec<u64> = match bare {
        true => (halves.filter(|&(_, fp)| fp == 0))
            .map(|(id, _)| id)
            .collect(),
        false => Vec::new(),
    };
    let stored = stored_fingerprints(env, store, &missing);
    move |id, taken| match taken {
        0 => stored.get(&id).copied(),
        fp => Some(fp),
    }
}

/// Moves the sends the workers set aside with a timestamp before `before`
/// into the outbox of their node.
fn absorb_sends(keys: &mut Keys, store: &SharedStore, ex: &mut Exchange, before: i64) {
    let sends = &mut ex.scratch.sends;
    let bare = store.correlator().crossing().take_sends(before, sends);
    let halves = sends.iter().map(|h| (h.id, h.fingerprint));
    let fingerprint = fingerprints(keys.env, store, halves, bare);
    for h in sends.iter() {
        let Some(fp) = fingerprint(h.id, h.fingerprint) else {
            ex.skipped += 1;
            continue;
        };
        let (node, half) = keys.send_half(h, fp);
        ex.outbox.entry(node).or_default().push(&half);
    }
}

/// A binary of a batch's two parts (see `SendBatch::parts`).
fn binary<'a>(env: Env<'a>, (head, body): (Vec<u8>, &[u8])) -> Binary<'a> {
    let mut b = OwnedBinary::new(head.len() + body.len());
    let (h, rest) = b.as_mut_slice().split_at_mut(head.len());
    h.copy_from_slice(&head);
    rest.copy_from_slice(body);
    b.release(env)
}

/// Names this node in the store as a cluster session starts: from now on
/// its correlator sets messages crossing nodes aside for the exchange,
/// and sessions started after this take their fingerprints (what an
/// earlier session left waiting is dropped and counted).
#[rustler::nif]
fn cross_node_set_local(env: Env, store: ResourceArc<StoreRes>, node: Atom) -> Atom {
    let bin = node.to_term(env).to_binary();
    let name = atom_text(bin.as_slice()).to_vec();
    let mut ex = store.0.exchange();
    let mut correlator = store.0.correlator();
    let crossing = correlator.crossing();
    ex.reset(crossing.sends.len() + crossing.receives.len());
    crossing.sends.clear();
    crossing.receives.clear();
    correlator.set_local_node(Some(LocalNode {
        atom: word(node.as_c_arg()),
        name,
    }));
    atoms::ok()
}

/// The cluster session stopped: no more messages are set aside (those set
/// aside stay for its last round).
#[rustler::nif]
fn cross_node_forget_local(store: ResourceArc<StoreRes>) -> Atom {
    store.0.correlator().set_local_node(None);
    atoms::ok()
}

/// The sends to node `to` sent here before `before` (monotonic ns) and
/// not taken yet, as a `SendBatch`.
#[rustler::nif(schedule = "DirtyCpu")]
fn cross_node_take_sends<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    to: Atom,
    before: i64,
) -> Binary<'a> {
    let mut keys = Keys::new(env);
    let mut ex = store.0.exchange();
    absorb_sends(&mut keys, &store.0, &mut ex, before);
    let to = keys.node(word(to.as_c_arg()));
    match ex.outbox.get_mut(&to) {
        Some(batch) => {
            let bytes = binary(env, batch.parts());
            batch.clear();
            bytes
        }
        None => binary(env, SendBatch::default().parts()),
    }
}

/// Pairs this node's receives from other nodes with a timestamp before
/// `settled` (monotonic ns; younger ones stay set aside) with the sends
/// taken from them (`[{node, send batch}]`) and links the receives;
/// `names` are this node's registered names and their pids (this node's
/// own sends before `settled` go to the outbox). Returns `{[{node, link
/// backs}], linked, waiting}`: the encoded `LinkBack`s each sending node
/// applies with `cross_node_link_back/3`, how many receives were linked
/// now, and how many wait (see `Collected::waiting_receives`; the rest
/// of the exchange's counters are in `correlator_stats`).
#[rustler::nif(schedule = "DirtyCpu")]
fn cross_node_link<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    inbound: Vec<(Atom, Binary)>,
    names: Vec<(Atom, rustler::LocalPid)>,
    settled: i64,
) -> NifResult<Term<'a>> {
    let mut keys = Keys::new(env);
    let holders: WordMap<u64, u64> = names
        .iter()
        .map(|(name, pid)| {
            let pid = word(pid.encode(env).as_c_arg());
            (keys.name(word(name.as_c_arg())), keys.pid(pid))
        })
        .collect();
    let mut ex = store.0.exchange();
    absorb_sends(&mut keys, &store.0, &mut ex, settled);
    let Exchange {
        nodes,
        matcher,
        skipped,
        scratch,
        ..
    } = &mut *ex;
    let holder = |n| holders.get(&n).copied();
    for (node, bytes) in &inbound {
        let atom = word(node.as_c_arg());
        let node = keys.node(atom);
        nodes.insert(node, atom);
        let mark = matcher.sends_held();
        let mut halves = SendBatch::decode(bytes.as_slice());
        matcher.add_sends(node, &mut halves, holder);
        if !halves.is_whole() {
            // The batches before it stay for the next round; what this
            // one held is lost, and counted.
            *skipped += matcher.forget_sends_from(mark);
            return Err(rustler::Error::BadArg);
        }
    }
    let receives = &mut scratch.receives;
    let bare = (store.0.correlator().crossing()).take_receives(settled, receives);
    let halves = receives.iter().map(|h| (h.id, h.fingerprint));
    let fingerprint = fingerprints(env, &store.0, halves, bare);
    let mut unread = 0;
    let halves = receives
        .iter()
        .filter_map(|h| match fingerprint(h.id, h.fingerprint) {
            Some(fp) => Some(keys.receive_half(h, fp)),
            None => {
                unread += 1;
                None
            }
        });
    let matched = &mut scratch.matched;
    matched.clear();
    matcher.run(halves, settled, matched);
    *skipped += unread;
    // Each match is linked here and goes back to its send's node (its
    // sends all came from `inbound` nodes, this round or before).
    // (Matches come in runs from one node.)
    let mut last = (0, None);
    let mut node_atom = |m: &Matched| {
        if last.0 != m.node {
            last = (m.node, nodes.get(&m.node).copied());
        }
        last.1
    };
    let links = matched.iter().filter_map(|m| {
        let confidence = Some(m.confidence);
        Some((
            m.receive,
            LinkKind::RemoteReceives,
            node_atom(m)?,
            m.send,
            confidence,
        ))
    });
    store.0.link_remote_all(links);
    let mut backs: Vec<(u64, LinkBackBatch)> = Vec::new();
    for m in matched.iter() {
        let Some(node) = node_atom(m) else { continue };
        let batch = match backs.iter().position(|(n, _)| *n == node) {
            Some(i) => &mut backs[i].1,
            None => {
                backs.push((node, LinkBackBatch::default()));
                &mut backs.last_mut().expect("just pushed").1
            }
        };
        batch.push(LinkBack {
            send: m.send,
            receive: m.receive,
        });
    }
    let backs: Vec<_> = backs
        .iter()
        .map(|(node, batch)| {
            // SAFETY: node atom words are immediates.
            let node = unsafe { Term::new(env, from_word(*node)) };
            (node, binary(env, batch.parts()))
        })
        .collect();
    let waiting = (store.0.correlator().crossing()).waiting_receives(&matcher.stats());
    Ok((backs, matched.len(), waiting).encode(env))
}

/// Links this node's sends to their receives on `node` (encoded
/// `LinkBack`s from its `cross_node_link/3`); returns how many took.
#[rustler::nif(schedule = "DirtyCpu")]
fn cross_node_link_back(
    store: ResourceArc<StoreRes>,
    node: Atom,
    backs: Binary,
) -> NifResult<usize> {
    let node = word(node.as_c_arg());
    let mut backs = LinkBack::decode(backs.as_slice());
    let links = (&mut backs).map(|b| (b.send, LinkKind::RemoteReceivedBy, node, b.receive, None));
    let applied = store.0.link_remote_all(links);
    // What came before a malformed part is linked (it is well-formed).
    match backs.is_whole() {
        true => Ok(applied),
        false => Err(rustler::Error::BadArg),
    }
}
