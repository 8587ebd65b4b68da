//! The cluster exchange's NIFs (see `elixir_scope_core::cross_node`).
//!
//! `ElixirScope.Cluster.Local` calls them on each node: name the node
//! (`cross_node_set_local`), hand over its sends to one node
//! (`cross_node_take_sends`), pair its receives with the sends taken from
//! the others and link them (`cross_node_link`), and link its sends back
//! (`cross_node_link_back`). Each call first reads the crossing halves
//! stored since the last one and builds their node-independent keys
//! ([`Keys`]): that needs the VM (atom names, pids' external format), so
//! it happens here, not in the workers.

use rustler::{Atom, Binary, Encoder, Env, NifResult, OwnedBinary, ResourceArc, Term};

use elixir_scope_core::cross_node::matcher::ReceiveHalf;
use elixir_scope_core::cross_node::wire::{etf_key, fingerprint, name_key, LinkBack, SendHalf, To};
use elixir_scope_core::cross_node::{
    etf_node, external_bytes, tuple_of_two_atoms, Exchange, LocalNode,
};
use elixir_scope_core::event::{EventView, LinkKind};
use elixir_scope_core::hash::WordMap;
use elixir_scope_core::payload::{tag, varint};
use elixir_scope_core::store::SharedStore;

use crate::atoms;
use crate::codec::{from_word, word};
use crate::resources::StoreRes;

/// Node-independent keys of this VM's atom and pid words, and node atoms
/// by name, each built once per call.
struct Keys<'a> {
    env: Env<'a>,
    atoms: WordMap<u64, u64>,
    pids: WordMap<u64, u64>,
    /// Node atom words by the `name_key` of their name.
    nodes: WordMap<u64, u64>,
}

impl<'a> Keys<'a> {
    fn new(env: Env<'a>) -> Self {
        Keys {
            env,
            atoms: WordMap::default(),
            pids: WordMap::default(),
            nodes: WordMap::default(),
        }
    }

    fn external(&self, w: u64) -> OwnedBinary {
        // SAFETY: atom and local pid words are immediates, valid in any env.
        unsafe { Term::new(self.env, from_word(w)) }.to_binary()
    }

    /// The `name_key` of an atom word (from its external format, which
    /// names it the same on every node).
    fn atom(&mut self, w: u64) -> u64 {
        if let Some(&k) = self.atoms.get(&w) {
            return k;
        }
        let k = name_key(self.external(w).as_slice());
        self.atoms.insert(w, k);
        k
    }

    /// The `etf_key` of a local pid word.
    fn pid(&mut self, w: u64) -> u64 {
        if let Some(&k) = self.pids.get(&w) {
            return k;
        }
        let k = etf_key(self.external(w).as_slice());
        self.pids.insert(w, k);
        k
    }

    fn key(&mut self, t: u8, w: u64) -> Option<u64> {
        Some(if t == tag::ATOM {
            self.atom(w)
        } else {
            self.pid(w)
        })
    }

    /// The atom word of the node named `name`.
    fn node(&mut self, name: &[u8]) -> Option<u64> {
        let key = name_key(name);
        if let Some(&w) = self.nodes.get(&key) {
            return Some(w);
        }
        let w = word(Atom::from_bytes(self.env, name).ok()?.as_c_arg());
        self.nodes.insert(key, w);
        Some(w)
    }

    /// The destination node and key of a send crossing nodes.
    fn destination(&mut self, peer: &[u8]) -> Option<(u64, To)> {
        if let Some((name, node)) = tuple_of_two_atoms(peer) {
            return Some((node, To::Name(self.atom(name))));
        }
        let etf = external_bytes(peer)?;
        let node = self.node(etf_node(etf)?)?;
        // A pid (ETF tags 88, 103), else an alias addressed to the node.
        let to = match etf.get(1) {
            Some(88 | 103) => To::Pid(etf_key(etf)),
            _ => To::Node,
        };
        Some((node, to))
    }

    /// The sender's node and pid key (0 when unknown) of a receive from
    /// another node.
    fn sender(&mut self, peer: &[u8]) -> Option<(u64, u64)> {
        if peer.first() == Some(&tag::ATOM) {
            let mut at = 1;
            return Some((varint::decode(peer, &mut at)?, 0));
        }
        let etf = external_bytes(peer)?;
        Some((self.node(etf_node(etf)?)?, etf_key(etf)))
    }

    fn send_half(&mut self, v: &EventView) -> Option<(u64, SendHalf)> {
        let (node, to) = self.destination(v.peer)?;
        let fingerprint = fingerprint(v.data, |t, w| self.key(t, w))?;
        let half = SendHalf {
            id: v.id,
            sender: self.pid(v.pid),
            to,
            fingerprint,
        };
        Some((node, half))
    }

    fn receive_half(&mut self, v: &EventView) -> Option<ReceiveHalf> {
        let (node, sender) = self.sender(v.peer)?;
        Some(ReceiveHalf {
            id: v.id,
            receiver: self.pid(v.pid),
            node,
            sender,
            fingerprint: fingerprint(v.data, |t, w| self.key(t, w))?,
        })
    }
}

/// Reads the crossing halves stored since the last call into `ex`: sends
/// into the outbox of their node, receives into the matcher.
fn absorb(keys: &mut Keys, store: &SharedStore, ex: &mut Exchange) {
    let (sends, receives, _) = store.correlator().take_crossing();
    let s = store.read();
    let mut read = 0;
    s.visit(&s.hits_of(&sends), |v| {
        read += 1;
        match keys.send_half(&v) {
            Some((node, half)) => half.write(ex.outbox.entry(node).or_default()),
            None => ex.skipped += 1,
        }
    });
    let mut halves = Vec::with_capacity(receives.len());
    s.visit(&s.hits_of(&receives), |v| {
        read += 1;
        match keys.receive_half(&v) {
            Some(half) => halves.push(half),
            None => ex.skipped += 1,
        }
    });
    ex.skipped += (sends.len() + receives.len() - read) as u64;
    ex.matcher.add_receives(halves);
}

fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Binary<'a> {
    let mut b = OwnedBinary::new(bytes.len());
    b.as_mut_slice().copy_from_slice(bytes);
    b.release(env)
}

/// Names this node in the store as a cluster session starts: from now on
/// its correlator sets messages crossing nodes aside for the exchange
/// (what an earlier session left waiting is dropped and counted).
#[rustler::nif]
fn cross_node_set_local(env: Env, store: ResourceArc<StoreRes>, node: Atom) -> Atom {
    let bin = node.to_term(env).to_binary();
    let name = etf_node_name(bin.as_slice()).to_vec();
    let mut ex = store.0.exchange();
    let mut correlator = store.0.correlator();
    let (sends, receives, _) = correlator.take_crossing();
    ex.reset(sends.len() + receives.len());
    correlator.set_local_node(LocalNode {
        atom: word(node.as_c_arg()),
        name,
    });
    atoms::ok()
}

/// An atom's name bytes from its external format (131, then a 1- or
/// 2-byte length).
fn etf_node_name(etf: &[u8]) -> &[u8] {
    match etf {
        [131, 115 | 119, _, name @ ..] | [131, 100 | 118, _, _, name @ ..] => name,
        _ => &[],
    }
}

/// The sends to node `to` stored here since the last call, as
/// `SendHalf` records.
#[rustler::nif(schedule = "DirtyCpu")]
fn cross_node_take_sends<'a>(env: Env<'a>, store: ResourceArc<StoreRes>, to: Atom) -> Binary<'a> {
    let mut ex = store.0.exchange();
    absorb(&mut Keys::new(env), &store.0, &mut ex);
    let bytes = ex.outbox.remove(&word(to.as_c_arg())).unwrap_or_default();
    binary(env, &bytes)
}

/// Pairs this node's receives from other nodes with the sends taken from
/// them (`[{node, records}]`) and links the receives; `names` are this
/// node's registered names and their pids. Returns `{[{node, link backs}],
/// linked, stats}`: the `LinkBack` records each sending node applies with
/// `cross_node_link_back/3`, how many receives were linked now, and the
/// matcher's counters.
#[rustler::nif(schedule = "DirtyCpu")]
fn cross_node_link<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    inbound: Vec<(Atom, Binary)>,
    names: Vec<(Atom, rustler::LocalPid)>,
) -> NifResult<Term<'a>> {
    let mut keys = Keys::new(env);
    let holders: WordMap<u64, u64> = names
        .iter()
        .map(|(name, pid)| {
            let pid = word(pid.encode(env).as_c_arg());
            (keys.atom(word(name.as_c_arg())), keys.pid(pid))
        })
        .collect();
    let mut ex = store.0.exchange();
    absorb(&mut keys, &store.0, &mut ex);
    for (node, records) in &inbound {
        let sends = SendHalf::read_all(records.as_slice()).ok_or(rustler::Error::BadArg)?;
        ex.matcher
            .add_sends(word(node.as_c_arg()), &sends, |n| holders.get(&n).copied());
    }
    let mut matched = Vec::new();
    ex.matcher.run(&mut matched);
    store.0.link_remote_all(matched.iter().map(|m| {
        let kind = LinkKind::RemoteReceives;
        (m.receive, kind, m.node, m.send, Some(m.confidence))
    }));
    let mut backs: WordMap<u64, Vec<u8>> = WordMap::default();
    for m in &matched {
        let back = LinkBack {
            send: m.send,
            receive: m.receive,
        };
        back.write(backs.entry(m.node).or_default());
    }
    let backs = backs
        .iter()
        .map(|(&node, bytes)| {
            // SAFETY: node atom words are immediates.
            let node = unsafe { Term::new(env, from_word(node)) };
            (node, binary(env, bytes))
        })
        .collect::<Vec<_>>();
    let s = ex.matcher.stats();
    let stats = crate::atom_map!(env, {
        "linked" => s.linked,
        "ambiguous" => s.ambiguous,
        "dropped" => s.dropped,
        "skipped" => ex.skipped,
        "waiting_sends" => s.waiting_sends,
        "waiting_receives" => s.waiting_receives,
    });
    Ok((backs, matched.len(), stats).encode(env))
}

/// Links this node's sends to their receives on `node` (`LinkBack`
/// records from its `cross_node_link/3`); returns how many took.
#[rustler::nif(schedule = "DirtyCpu")]
fn cross_node_link_back(
    store: ResourceArc<StoreRes>,
    node: Atom,
    records: Binary,
) -> NifResult<usize> {
    let backs = LinkBack::read_all(records.as_slice()).ok_or(rustler::Error::BadArg)?;
    let node = word(node.as_c_arg());
    Ok(store.0.link_remote_all(
        backs
            .iter()
            .map(|b| (b.send, LinkKind::RemoteReceivedBy, node, b.receive, None)),
    ))
}
