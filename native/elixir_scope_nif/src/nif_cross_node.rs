//! The cluster exchange's NIFs (see `elixir_scope_core::cross_node`).
//!
//! `ElixirScope.Cluster.Local` calls them on each node: name the node
//! (`cross_node_set_local`), hand over its sends to one node
//! (`cross_node_take_sends`), pair its receives with the sends taken from
//! the others and link them (`cross_node_link`), and link its sends back
//! (`cross_node_link_back`). The steps are `cross_node::round`'s; this
//! module gives them what only the VM knows ([`VmKeys`]: atom names and
//! pids' external format, each built once per call; the `phash2` of a
//! stored message for a half ingested from Elixir, as the tracer takes
//! it) and turns their results into terms.

use rustler::{Atom, Binary, Encoder, Env, NifResult, OwnedBinary, ResourceArc, Term};

use elixir_scope_core::cross_node::round::{self, Keys, Parts};
use elixir_scope_core::cross_node::wire::{etf_key, name_key, node_key};
use elixir_scope_core::cross_node::{etf_node, LocalNode};
use elixir_scope_core::hash::WordMap;
use elixir_scope_core::store::SharedStore;

use crate::atoms;
use crate::codec::{from_word, term, word};
use crate::resources::StoreRes;

/// Node-independent keys of this VM's atom and pid words, each built once
/// per call.
struct VmKeys<'a> {
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

impl<'a> VmKeys<'a> {
    fn new(env: Env<'a>) -> Self {
        VmKeys {
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
}

impl Keys for VmKeys<'_> {
    fn pid(&mut self, w: u64) -> u64 {
        let env = self.env;
        (self.pids).get(w, || etf_key(Self::external(env, w).as_slice()))
    }

    fn name(&mut self, w: u64) -> u64 {
        let env = self.env;
        (self.names).get(w, || name_key(Self::external(env, w).as_slice()))
    }

    fn node(&mut self, w: u64) -> u64 {
        let env = self.env;
        (self.nodes).get(w, || node_key(atom_text(Self::external(env, w).as_slice())))
    }

    fn stored_fingerprints(&mut self, store: &SharedStore, ids: &[u64]) -> WordMap<u64, u32> {
        let mut out = WordMap::default();
        let s = store.read();
        s.visit(&s.hits_of(ids), |v| {
            out.insert(v.id, term::decode(self.env, v.data).hash_phash2().max(1));
        });
        out
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

/// A binary of a batch's two parts.
fn binary<'a>(env: Env<'a>, (head, body): Parts) -> Binary<'a> {
    let mut b = OwnedBinary::new(head.len() + body.len());
    let (h, rest) = b.as_mut_slice().split_at_mut(head.len());
    h.copy_from_slice(&head);
    rest.copy_from_slice(body);
    b.release(env)
}

/// The node `node` (its atom) as the correlator knows it.
fn local_node(env: Env, node: Atom) -> LocalNode {
    let bin = node.to_term(env).to_binary();
    LocalNode::new(word(node.as_c_arg()), atom_text(bin.as_slice()))
}

/// This VM's node, as it is named now (it may start or stop distribution
/// at any time): the node of the calling process's pid.
pub fn this_node(env: Env) -> Option<LocalNode> {
    let pid = env.pid().encode(env).to_binary();
    let name = etf_node(pid.as_slice())?;
    Some(local_node(env, Atom::from_bytes(env, name).ok()?))
}

/// Names this node in the store as a cluster session starts: from now on
/// its correlator sets messages crossing nodes aside for the exchange,
/// and sessions started after this take their fingerprints (what an
/// earlier session left waiting is dropped and counted).
#[rustler::nif]
fn cross_node_set_local(env: Env, store: ResourceArc<StoreRes>, node: Atom) -> Atom {
    let mut ex = store.0.exchange();
    let mut correlator = store.0.correlator();
    let crossing = correlator.crossing();
    ex.reset(crossing.sends.len() + crossing.receives.len());
    crossing.sends.clear();
    crossing.receives.clear();
    correlator.collect_crossing_as(local_node(env, node));
    atoms::ok()
}

/// The cluster session stopped: no more messages are set aside (those set
/// aside stay for its last round); messages crossing nodes are counted.
#[rustler::nif]
fn cross_node_forget_local(store: ResourceArc<StoreRes>) -> Atom {
    store.0.correlator().stop_collecting();
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
    let mut keys = VmKeys::new(env);
    let to = keys.node(word(to.as_c_arg()));
    round::take_sends(&mut keys, &store.0, to, before, |parts| binary(env, parts))
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
    let mut keys = VmKeys::new(env);
    let holders: WordMap<u64, u64> = names
        .iter()
        .map(|(name, pid)| {
            let pid = word(pid.encode(env).as_c_arg());
            (keys.name(word(name.as_c_arg())), keys.pid(pid))
        })
        .collect();
    let inbound: Vec<(u64, &[u8])> = (inbound.iter())
        .map(|(node, bytes)| (word(node.as_c_arg()), bytes.as_slice()))
        .collect();
    let linked = round::link(&mut keys, &store.0, &inbound, &holders, settled)
        .map_err(|_| rustler::Error::BadArg)?;
    let backs: Vec<_> = (linked.backs.iter())
        .map(|(node, batch)| {
            // SAFETY: node atom words are immediates.
            let node = unsafe { Term::new(env, from_word(*node)) };
            (node, binary(env, batch.parts()))
        })
        .collect();
    Ok((backs, linked.linked, linked.waiting).encode(env))
}

/// Links this node's sends to their receives on `node` (encoded
/// `LinkBack`s from its `cross_node_link/3`); returns how many took.
#[rustler::nif(schedule = "DirtyCpu")]
fn cross_node_link_back(
    store: ResourceArc<StoreRes>,
    node: Atom,
    backs: Binary,
) -> NifResult<usize> {
    round::link_back(&store.0, word(node.as_c_arg()), backs.as_slice())
        .map_err(|_| rustler::Error::BadArg)
}
