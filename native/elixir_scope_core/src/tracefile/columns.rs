//! Event columns: the body of an events frame.
//!
//! A frame's events are stored column by column (all ids, then all
//! timestamps, ...) and each number as a difference the next one can
//! guess: ids and timestamps from the previous event's, the wall-clock
//! offset and the correlation time from the previous event's offsets,
//! correlation ids and link targets relative to the event's own id. The
//! differences are small, so bincode's varints make them one or two bytes,
//! and equal neighbours give LZ4 long runs: a traced call or return saves
//! in ~8 bytes, under a tenth of its size in an ETS table file.
//!
//! Every difference wraps, so any value round-trips. Payloads (already in
//! file terms, see `portable`) are concatenated into one byte column.
//! [`EventColumns::check`] verifies the lengths agree before any row is
//! read, so a well-formed but inconsistent body is refused, never indexed
//! out of bounds.

use serde::{Deserialize, Serialize};

/// One event in the file's terms: atoms (`module`, `function`: 0 = none,
/// `n` = atom table entry `n - 1`) and `pid` as table indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Row<'a> {
    pub id: u64,
    pub timestamp: i64,
    pub wall_time: i64,
    pub pid: u32,
    pub module: u32,
    pub function: u32,
    pub arity: u8,
    pub kind: u8,
    pub ingest_stamped: bool,
    pub correlated: bool,
    pub data: &'a [u8],
    pub peer: &'a [u8],
    pub correlation_id: u64,
    pub parent_id: u64,
    pub root_id: u64,
    pub correlated_at: i64,
    pub confidence: f32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventColumns {
    id: Vec<i64>,
    timestamp: Vec<i64>,
    wall_offset: Vec<i64>,
    pid: Vec<u32>,
    module: Vec<u32>,
    function: Vec<u32>,
    #[serde(with = "serde_bytes")]
    arity: Vec<u8>,
    #[serde(with = "serde_bytes")]
    kind: Vec<u8>,
    /// Bit 0: ingest_stamped; bit 1: correlated.
    #[serde(with = "serde_bytes")]
    flags: Vec<u8>,
    data_len: Vec<u32>,
    peer_len: Vec<u32>,
    #[serde(with = "serde_bytes")]
    payloads: Vec<u8>,
    correlation_id: Vec<i64>,
    parent_id: Vec<i64>,
    root_id: Vec<i64>,
    link_count: Vec<u32>,
    #[serde(with = "serde_bytes")]
    link_kind: Vec<u8>,
    link_target: Vec<i64>,
    correlated_offset: Vec<i64>,
    confidence: Vec<f32>,
}

/// `cur - prev`, wrapping: small when the two are close either way.
fn delta(cur: u64, prev: u64) -> i64 {
    cur.wrapping_sub(prev) as i64
}

fn undelta(d: i64, prev: u64) -> u64 {
    prev.wrapping_add(d as u64)
}

/// An id `x` relative to the event's own `id`: 0 stays 0 (no id), ids
/// just before `id` are small positive, just after small negative. A
/// bijection on u64 for each `id` (the one value that would map to 0,
/// `id + 1`, takes the value 0 would have had).
fn rel(id: u64, x: u64) -> i64 {
    let e = id.wrapping_sub(x).wrapping_add(1);
    if x == 0 || x == id.wrapping_add(1) {
        return x as i64;
    }
    e as i64
}

fn unrel(id: u64, e: i64) -> u64 {
    let e = e as u64;
    if e == 0 || e == id.wrapping_add(1) {
        return e;
    }
    id.wrapping_sub(e.wrapping_sub(1))
}

impl EventColumns {
    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// Whether every column agrees with the id column's length and the
    /// payload and link columns with their lengths' sums.
    pub fn check(&self) -> bool {
        let n = self.len();
        let lens = [
            self.timestamp.len(),
            self.wall_offset.len(),
            self.pid.len(),
            self.module.len(),
            self.function.len(),
            self.arity.len(),
            self.kind.len(),
            self.flags.len(),
            self.data_len.len(),
            self.peer_len.len(),
            self.correlation_id.len(),
            self.parent_id.len(),
            self.root_id.len(),
            self.link_count.len(),
            self.correlated_offset.len(),
            self.confidence.len(),
        ];
        let sum = |v: &[u32]| v.iter().map(|&l| l as u64).sum::<u64>();
        let links = sum(&self.link_count);
        lens.iter().all(|&l| l == n)
            && sum(&self.data_len) + sum(&self.peer_len) == self.payloads.len() as u64
            && links == self.link_kind.len() as u64
            && links == self.link_target.len() as u64
    }

    /// Each row with its links; the columns must have passed [`check`](Self::check).
    pub fn rows(&self) -> impl Iterator<Item = (Row<'_>, RowLinks<'_>)> + '_ {
        let mut prev = Prev::default();
        let (mut at, mut link) = (0usize, 0usize);
        (0..self.len()).map(move |i| {
            let id = undelta(self.id[i], prev.id);
            let timestamp = undelta(self.timestamp[i], prev.timestamp as u64) as i64;
            let wall_offset = undelta(self.wall_offset[i], prev.wall_offset as u64) as i64;
            let correlated_offset =
                undelta(self.correlated_offset[i], prev.correlated_offset as u64) as i64;
            prev = Prev {
                id,
                timestamp,
                wall_offset,
                correlated_offset,
            };
            let (d, p) = (self.data_len[i] as usize, self.peer_len[i] as usize);
            let data = &self.payloads[at..at + d];
            let peer = &self.payloads[at + d..at + d + p];
            at += d + p;
            let count = self.link_count[i] as usize;
            let links = RowLinks {
                id,
                kinds: &self.link_kind[link..link + count],
                targets: &self.link_target[link..link + count],
            };
            link += count;
            let row = Row {
                id,
                timestamp,
                wall_time: timestamp.wrapping_add(wall_offset),
                pid: self.pid[i],
                module: self.module[i],
                function: self.function[i],
                arity: self.arity[i],
                kind: self.kind[i],
                ingest_stamped: self.flags[i] & 1 != 0,
                correlated: self.flags[i] & 2 != 0,
                data,
                peer,
                correlation_id: unrel(id, self.correlation_id[i]),
                parent_id: unrel(id, self.parent_id[i]),
                root_id: unrel(id, self.root_id[i]),
                correlated_at: timestamp.wrapping_add(correlated_offset),
                confidence: self.confidence[i],
            };
            (row, links)
        })
    }
}

/// A row's links, read from the link columns.
pub struct RowLinks<'a> {
    id: u64,
    kinds: &'a [u8],
    targets: &'a [i64],
}

impl RowLinks<'_> {
    /// (kind, target) of each link.
    pub fn iter(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        let id = self.id;
        self.kinds
            .iter()
            .zip(self.targets)
            .map(move |(&k, &t)| (k, unrel(id, t)))
    }
}

/// The values of the row before, which the next row's are differences from.
#[derive(Clone, Copy, Default)]
struct Prev {
    id: u64,
    timestamp: i64,
    wall_offset: i64,
    correlated_offset: i64,
}

/// Builds the columns of one frame, row by row.
#[derive(Default)]
pub struct ColumnsBuilder {
    cols: EventColumns,
    prev: Prev,
}

impl ColumnsBuilder {
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// The columns built; the builder starts a new frame.
    pub fn take(&mut self) -> EventColumns {
        self.prev = Prev::default();
        std::mem::take(&mut self.cols)
    }

    /// Appends `r` with its links as (kind, target).
    pub fn push(&mut self, r: &Row, links: impl IntoIterator<Item = (u8, u64)>) {
        let (prev, c) = (self.prev, &mut self.cols);
        c.id.push(delta(r.id, prev.id));
        c.timestamp
            .push(delta(r.timestamp as u64, prev.timestamp as u64));
        let wall_offset = r.wall_time.wrapping_sub(r.timestamp);
        c.wall_offset
            .push(delta(wall_offset as u64, prev.wall_offset as u64));
        c.pid.push(r.pid);
        c.module.push(r.module);
        c.function.push(r.function);
        c.arity.push(r.arity);
        c.kind.push(r.kind);
        c.flags
            .push(u8::from(r.ingest_stamped) | u8::from(r.correlated) << 1);
        c.data_len.push(r.data.len() as u32);
        c.peer_len.push(r.peer.len() as u32);
        c.payloads.extend_from_slice(r.data);
        c.payloads.extend_from_slice(r.peer);
        c.correlation_id.push(rel(r.id, r.correlation_id));
        c.parent_id.push(rel(r.id, r.parent_id));
        c.root_id.push(rel(r.id, r.root_id));
        let before = c.link_kind.len();
        for (kind, target) in links {
            c.link_kind.push(kind);
            c.link_target.push(rel(r.id, target));
        }
        c.link_count.push((c.link_kind.len() - before) as u32);
        let correlated_offset = r.correlated_at.wrapping_sub(r.timestamp);
        c.correlated_offset.push(delta(
            correlated_offset as u64,
            prev.correlated_offset as u64,
        ));
        c.confidence.push(r.confidence);
        self.prev = Prev {
            id: r.id,
            timestamp: r.timestamp,
            wall_offset,
            correlated_offset,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_ids_are_a_bijection_and_small_near_the_id() {
        for id in [0, 1, 2, 1000, u64::MAX - 1, u64::MAX] {
            for x in [
                0,
                1,
                2,
                id.wrapping_sub(1),
                id,
                id.wrapping_add(1),
                id.wrapping_add(2),
                u64::MAX,
            ] {
                assert_eq!(unrel(id, rel(id, x)), x, "id {id} x {x}");
            }
        }
        assert_eq!(rel(1000, 0), 0);
        assert_eq!(rel(1000, 999), 2);
        assert_eq!(rel(1000, 1000), 1);
        assert_eq!(rel(1000, 1002), -1);
    }

    fn row(id: u64, timestamp: i64, data: &[u8]) -> Row<'_> {
        Row {
            id,
            timestamp,
            wall_time: timestamp.wrapping_add(1_700_000_000_000_000_000),
            pid: 3,
            module: 1,
            function: 2,
            arity: 1,
            kind: 0,
            ingest_stamped: true,
            correlated: true,
            data,
            peer: &[],
            correlation_id: id.wrapping_sub(1),
            parent_id: 0,
            root_id: 1,
            correlated_at: timestamp.wrapping_add(500),
            confidence: 0.5,
        }
    }

    #[test]
    fn rows_round_trip_through_differences_including_extremes() {
        let rows = [
            row(1, -5, b"ab"),
            row(2, i64::MAX, b""),
            row(u64::MAX, i64::MIN, b"xyz"),
            row(7, 0, b"q"),
        ];
        let links = [
            vec![(1u8, 0u64)],
            vec![],
            vec![(2, u64::MAX), (0, 3)],
            vec![(4, 8)],
        ];
        let mut b = ColumnsBuilder::default();
        for (r, l) in rows.iter().zip(&links) {
            b.push(r, l.iter().copied());
        }
        let cols = b.take();
        assert!(cols.check() && b.is_empty());
        let back: Vec<_> = cols
            .rows()
            .map(|(r, l)| (r, l.iter().collect::<Vec<_>>()))
            .collect();
        let expected: Vec<_> = rows.iter().cloned().zip(links.iter().cloned()).collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn inconsistent_columns_fail_the_check() {
        let mut b = ColumnsBuilder::default();
        b.push(&row(1, 1, b"ab"), [(0, 1)]);
        let good = b.take();
        let mut bad = good.clone();
        bad.payloads.pop();
        assert!(good.check() && !bad.check());
        let mut bad = good.clone();
        bad.link_target.clear();
        assert!(!bad.check());
        let mut bad = good;
        bad.confidence.push(1.0);
        assert!(!bad.check());
    }
}
