//! Log: the store's records in arrival order, addressed by position.
//!
//! Positions count every record ever appended (they never repeat), so the
//! log holds no gap for an event that never arrived: ids of dropped events
//! cost nothing here. Records live in chunks of [`CHUNK`]; each chunk also
//! holds the payload bytes of its records in one arena (`varint(data
//! length), data bytes, peer bytes` per record; a record's bytes end where
//! the next record's begin), and the min and max timestamp of its records,
//! a block-range index for time queries. Evicting from the front releases
//! whole chunks, keeping one as a spare so a full store recycles its
//! memory instead of asking the allocator.
//!
//! A chunk may also keep one link beside each record ([`SideLink`], the
//! link of a message crossing nodes to its other half, found long after
//! the record was written): setting it writes a dense column, in position
//! order for a batch, and never touches the record, long out of cache by
//! then. The column is allocated with the first link set in the chunk.
//!
//! Invariants: `chunks[i]` holds positions `(first_chunk + i) * CHUNK ..`,
//! its records in position order; `first_chunk * CHUNK <= front <= end`;
//! positions below `front` are gone; a chunk is released once `front`
//! passes its last position.

use std::collections::VecDeque;

use super::record::Record;
use crate::links::{LinksView, Packed};
use crate::payload::varint;

/// Records per chunk (a power of two).
pub const CHUNK: usize = 1024;

/// A link kept beside the record at its position, for the record whose
/// id's low 32 bits are `id_lo`; `confidence` replaces the record's unless
/// NaN.
#[derive(Clone, Copy)]
pub struct SideLink {
    pub link: Packed,
    pub id_lo: u32,
    pub confidence: f32,
}

const NO_SIDE_LINK: SideLink = SideLink {
    link: Packed::NONE,
    id_lo: 0,
    confidence: f32::NAN,
};

pub struct Chunk {
    records: Vec<Record>,
    arena: Vec<u8>,
    /// Empty, or one slot per record position of the chunk.
    side: Vec<SideLink>,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl Chunk {
    /// A chunk whose arena starts at `arena` bytes (the previous chunk's
    /// size, so a store of like events does not pay doubling's slack).
    fn new(arena: usize) -> Chunk {
        Chunk {
            records: Vec::with_capacity(CHUNK),
            arena: Vec::with_capacity(arena),
            side: Vec::new(),
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        }
    }

    fn clear(&mut self) {
        self.records.clear();
        self.arena.clear();
        self.side.clear();
        self.min_ts = i64::MAX;
        self.max_ts = i64::MIN;
    }

    fn payload(&self, at: usize) -> (&[u8], &[u8]) {
        let start = self.records[at].payload_at as usize;
        let end = self
            .records
            .get(at + 1)
            .map_or(self.arena.len(), |r| r.payload_at as usize);
        let bytes = &self.arena[start..end];
        let mut pos = 0;
        let data_len = varint::decode(bytes, &mut pos).unwrap_or(0) as usize;
        bytes[pos..].split_at(data_len)
    }

    fn side_link(&self, at: usize) -> Option<SideLink> {
        let side = *self.side.get(at)?;
        (side.link != Packed::NONE && side.id_lo == self.records[at].id as u32).then_some(side)
    }

    fn memory_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>()
            + self.arena.capacity()
            + self.side.capacity() * std::mem::size_of::<SideLink>()
    }
}

/// A record with its payload bytes and the link beside it.
pub struct Entry<'a> {
    pub record: &'a Record,
    pub data: &'a [u8],
    pub peer: &'a [u8],
    pub side: Option<SideLink>,
}

impl<'a> Entry<'a> {
    /// The record's links and the one beside it.
    pub fn links(&self) -> LinksView<'a> {
        LinksView {
            held: &self.record.links,
            beside: self.side.map(|s| s.link.get()),
        }
    }

    /// The confidence set beside the record, else the record's.
    pub fn confidence(&self) -> f32 {
        self.side
            .map(|s| s.confidence)
            .filter(|c| !c.is_nan())
            .unwrap_or(self.record.confidence)
    }
}

#[derive(Default)]
pub struct Log {
    chunks: VecDeque<Chunk>,
    first_chunk: u64,
    front: u64,
    end: u64,
    spare: Option<Chunk>,
}

impl Log {
    /// First position held.
    pub fn front(&self) -> u64 {
        self.front
    }

    /// Next position to be appended.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Positions held (live or removed).
    pub fn len(&self) -> u64 {
        self.end - self.front
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `record` with its payload bytes; returns its position.
    pub fn push(&mut self, mut record: Record, data: &[u8], peer: &[u8]) -> u64 {
        if self.end.is_multiple_of(CHUNK as u64) {
            let last_arena = self.chunks.back().map_or(0, |c| c.arena.len());
            let chunk = self
                .spare
                .take()
                .unwrap_or_else(|| Chunk::new(last_arena + last_arena / 16));
            if self.chunks.is_empty() {
                self.first_chunk = self.end / CHUNK as u64;
            }
            self.chunks.push_back(chunk);
        }
        let chunk = self.chunks.back_mut().expect("a chunk with room");
        record.payload_at = chunk.arena.len() as u32;
        varint::push(&mut chunk.arena, data.len() as u64);
        chunk.arena.extend_from_slice(data);
        chunk.arena.extend_from_slice(peer);
        chunk.min_ts = chunk.min_ts.min(record.timestamp);
        chunk.max_ts = chunk.max_ts.max(record.timestamp);
        chunk.records.push(record);
        self.end += 1;
        self.end - 1
    }

    fn locate(&self, pos: u64) -> Option<(usize, usize)> {
        if pos < self.front || pos >= self.end {
            return None;
        }
        let c = (pos / CHUNK as u64 - self.first_chunk) as usize;
        Some((c, pos as usize % CHUNK))
    }

    pub fn get(&self, pos: u64) -> Option<Entry<'_>> {
        let (c, at) = self.locate(pos)?;
        let chunk = &self.chunks[c];
        let (data, peer) = chunk.payload(at);
        Some(Entry {
            record: &chunk.records[at],
            data,
            peer,
            side: chunk.side_link(at),
        })
    }

    /// Keeps `link` beside the record at `pos` (replacing one there), for
    /// the record with id `id`; false when `pos` is not held.
    pub fn set_side_link(&mut self, pos: u64, id: u64, link: Packed, confidence: f32) -> bool {
        let Some((c, at)) = self.locate(pos) else {
            return false;
        };
        let side = &mut self.chunks[c].side;
        if side.is_empty() {
            side.resize(CHUNK, NO_SIDE_LINK);
        }
        side[at] = SideLink {
            link,
            id_lo: id as u32,
            confidence,
        };
        true
    }

    /// Asks the CPU to bring the record at `pos` into cache (a hint only).
    #[inline(always)]
    pub fn prefetch(&self, pos: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some((c, at)) = self.locate(pos) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let record = self.chunks[c].records.as_ptr().wrapping_add(at) as *const i8;
            // SAFETY: prefetching never faults, whatever the address.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(record);
                _mm_prefetch::<_MM_HINT_T0>(record.wrapping_add(64));
            }
        }
    }

    pub fn record(&self, pos: u64) -> Option<&Record> {
        let (c, at) = self.locate(pos)?;
        Some(&self.chunks[c].records[at])
    }

    pub fn record_mut(&mut self, pos: u64) -> Option<&mut Record> {
        let (c, at) = self.locate(pos)?;
        Some(&mut self.chunks[c].records[at])
    }

    /// Drops the front record, handing it to `gone` first; false when empty.
    pub fn pop_front(&mut self, gone: impl FnOnce(&Record)) -> bool {
        let Some(record) = self.record(self.front) else {
            return false;
        };
        gone(record);
        self.front += 1;
        if self.front.is_multiple_of(CHUNK as u64) {
            // The front passed its chunk's last position.
            let mut chunk = self.chunks.pop_front().expect("the front's chunk");
            chunk.clear();
            self.spare = Some(chunk);
            self.first_chunk += 1;
        }
        true
    }

    /// Position ranges `[start, end)` of chunks whose timestamps may fall in
    /// `[from, to]`, oldest first.
    pub fn time_candidates(&self, from: i64, to: i64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .filter(move |(_, c)| c.min_ts <= to && c.max_ts >= from)
            .map(move |(i, c)| {
                let start = (self.first_chunk + i as u64) * CHUNK as u64;
                (start.max(self.front), start + c.records.len() as u64)
            })
    }

    /// Bytes held: record slots, arenas, the spare chunk.
    pub fn memory_bytes(&self) -> usize {
        self.chunks
            .iter()
            .chain(self.spare.as_ref())
            .map(Chunk::memory_bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::links::Links;
    use crate::store::record::NONE;

    pub(crate) fn record(id: u64, timestamp: i64) -> Record {
        Record {
            id,
            timestamp,
            wall_time: 0,
            correlation_id: id,
            parent_id: 0,
            root_id: 0,
            correlated_at: 0,
            links: Links::None,
            pid_key: 0,
            fun_key: NONE,
            payload_at: 0,
            partner: NONE,
            confidence: 1.0,
            kind: EventKind::Custom,
            arity: 0,
            flags: 0,
        }
    }

    #[test]
    fn appends_reads_payloads_and_recycles_chunks() {
        let mut log = Log::default();
        let n = 3 * CHUNK as u64 + 5;
        for i in 0..n {
            let data = vec![i as u8; (i % 300) as usize];
            let peer: &[u8] = if i % 2 == 0 { &[8, 1] } else { &[] };
            assert_eq!(log.push(record(i + 1, i as i64), &data, peer), i);
        }
        for i in [0, 1, CHUNK as u64 - 1, CHUNK as u64, n - 1] {
            let e = log.get(i).unwrap();
            assert_eq!(e.record.id, i + 1);
            assert_eq!(e.data, &vec![i as u8; (i % 300) as usize][..]);
            assert_eq!(e.peer.len(), if i % 2 == 0 { 2 } else { 0 });
        }
        assert!(log.get(n).is_none());
        let before = log.memory_bytes();
        for i in 0..CHUNK as u64 + 1 {
            assert!(log.pop_front(|r| assert_eq!(r.id, i + 1)));
        }
        assert!(log.get(CHUNK as u64).is_none());
        assert_eq!(
            log.get(CHUNK as u64 + 1).unwrap().record.id,
            CHUNK as u64 + 2
        );
        assert_eq!(log.memory_bytes(), before, "released chunk kept as spare");
        // The spare is reused: appending a chunk's worth costs no memory.
        for i in n..n + CHUNK as u64 {
            log.push(record(i + 1, i as i64), &[], &[]);
        }
        assert!(log.memory_bytes() <= before + CHUNK * 300);
        assert_eq!(
            log.time_candidates(2 * CHUNK as i64, 2 * CHUNK as i64)
                .next(),
            Some((2 * CHUNK as u64, 3 * CHUNK as u64))
        );
        while log.pop_front(|_| {}) {}
        assert!(log.is_empty());
        assert_eq!(log.push(record(99, 0), &[1], &[]), log.end() - 1);
        assert_eq!(log.get(log.end() - 1).unwrap().data, &[1]);
    }

    #[test]
    fn side_links_stay_with_their_record_and_go_with_its_chunk() {
        use crate::event::{Link, LinkKind};
        let mut log = Log::default();
        for i in 0..2 * CHUNK as u64 {
            log.push(record(i + 1, 0), &[], &[]);
        }
        let link = Packed::new(Link {
            kind: LinkKind::RemoteReceives,
            target: 9,
        });
        let before = log.memory_bytes();
        assert!(log.get(3).unwrap().side.is_none());
        assert!(log.set_side_link(3, 4, link, 0.5));
        assert!(log.memory_bytes() > before, "the chunk's column is counted");
        let side = log.get(3).unwrap().side.unwrap();
        assert!(side.link == link && side.confidence == 0.5);
        assert!(log.get(4).unwrap().side.is_none(), "other slots are empty");
        assert!(
            log.set_side_link(5, 99, link, f32::NAN),
            "a slot for another id is kept"
        );
        assert!(log.get(5).unwrap().side.is_none(), "but never read");
        assert!(!log.set_side_link(2 * CHUNK as u64, 1, link, 1.0));
        for _ in 0..CHUNK {
            log.pop_front(|_| {});
        }
        assert!(!log.set_side_link(3, 4, link, 1.0), "gone with its chunk");
        // The recycled chunk starts without links.
        for i in 0..CHUNK as u64 {
            log.push(record(3 + i, 0), &[], &[]);
        }
        assert!(log.get(2 * CHUNK as u64).unwrap().side.is_none());
    }
}
