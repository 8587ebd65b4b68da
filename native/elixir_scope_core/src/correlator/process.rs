//! Process strategy: spawns, exits and the process tree.
//!
//! A spawn (pid = parent, peer = child) records the edge parent -> child and
//! tells the child's context which spawn created it, so the child's first
//! root call links `{:spawned_by, spawn}`. When the child's events came
//! first (another shard), its first root call is already known and is
//! patched instead. An exit closes the pid's open calls (in `function`) and
//! frees its context; the edge stays in the tree, as history, until it is
//! older than the TTL after the exit.

use super::{Change, Context, Patch};
use crate::event::{Event, Link, LinkKind};
use crate::hash::WordMap;

struct Edge {
    parent: u64,
    spawn_id: u64,
    /// Exit time of the child, once it exited.
    exited_at: Option<i64>,
}

#[derive(Default)]
pub struct Tree {
    /// child pid -> how it was spawned.
    edges: WordMap<u64, Edge>,
}

impl Tree {
    pub fn spawn(
        &mut self,
        e: &Event,
        contexts: &mut WordMap<u64, Context>,
        patches: &mut Vec<Patch>,
    ) {
        let Some(child) = e.peer.as_pid() else {
            return;
        };
        self.edges.insert(
            child,
            Edge {
                parent: e.pid,
                spawn_id: e.id,
                exited_at: None,
            },
        );
        let ctx = contexts.entry(child).or_default();
        ctx.spawned_by = e.id;
        ctx.seen_at = ctx.seen_at.max(e.timestamp);
        if ctx.first_root_call != 0 {
            patches.push(Patch {
                id: ctx.first_root_call,
                change: Change::Link(Link {
                    kind: LinkKind::SpawnedBy,
                    target: e.id,
                }),
            });
        }
    }

    /// Records an edge known from elsewhere (a saved trace).
    pub fn record(&mut self, parent: u64, child: u64, spawn_id: u64) {
        self.edges.insert(
            child,
            Edge {
                parent,
                spawn_id,
                exited_at: None,
            },
        );
    }

    pub fn exit(&mut self, pid: u64, at: i64) {
        if let Some(edge) = self.edges.get_mut(&pid) {
            edge.exited_at = Some(at);
        }
    }

    /// (parent, child, spawn id) of every known edge.
    pub fn edges(&self) -> Vec<(u64, u64, u64)> {
        let mut edges: Vec<_> = self
            .edges
            .iter()
            .map(|(&child, e)| (e.parent, child, e.spawn_id))
            .collect();
        edges.sort_unstable_by_key(|&(_, _, spawn_id)| spawn_id);
        edges
    }

    pub fn drop_older_than(&mut self, cutoff: i64) -> u64 {
        let before = self.edges.len();
        self.edges
            .retain(|_, e| e.exited_at.is_none_or(|at| at >= cutoff));
        (before - self.edges.len()) as u64
    }

    pub fn memory_bytes(&self) -> usize {
        self.edges.capacity() * (std::mem::size_of::<(u64, Edge)>() + 1)
    }
}
