//! Tracefile: the on-disk format of saved traces.
//!
//! Layout: `MAGIC` (8 bytes), the format `VERSION` (u16 LE), then frames
//! to the end of the file. A frame is a 16-byte head, u32 LE body length,
//! u32 LE number of events in it, u32 LE CRC-32 of the body and u32 LE
//! CRC-32 of those 12 bytes (a damaged head is never trusted), then the
//! body: an LZ4 block of the bincode encoding of one [`Frame`]. The first frame is
//! the [`Header`]; events are stored in columns of differences
//! ([`columns`]). Serde gives the record schema; bincode is compact and
//! its decoder takes an allocation limit, so a hostile length field cannot
//! exhaust memory; LZ4 (lz4_flex, pure Rust) compresses at memory speed.
//!
//! Atoms and pids are not stored as this VM's term words, which mean
//! nothing in another VM: fields and payloads name entries of the file's
//! atom and pid tables ([`Frame::Atoms`], [`Frame::Pids`]), which come
//! before the events that use them (see [`portable`]).
//!
//! Reading never trusts the file: a frame longer than [`MAX_FRAME`], a bad
//! checksum, a short read or an undecodable body is
//! `Error::Corrupt { offset, reason }`, `offset` being where the frame
//! starts; a newer format version is `Error::UnsupportedVersion`.

pub mod columns;
pub mod portable;

use std::io::{self, Read, Write};

use bincode::Options;
use serde::{Deserialize, Serialize};

use columns::EventColumns;

pub const MAGIC: &[u8; 8] = b"ESTRACE\0";
pub const VERSION: u16 = 1;
/// Largest frame body (compressed) and decoded frame accepted.
pub const MAX_FRAME: u32 = 64 << 20;
/// Bytes of a frame head.
const HEAD: usize = 16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The node the trace was saved on.
    pub node: String,
    /// Monotonic and system time (ns) when it was saved: the clock base.
    pub saved_at: i64,
    pub saved_at_wall: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    Header(Header),
    /// Atom names, appended to the atom table.
    Atoms(Vec<String>),
    /// Pids as (number, serial), appended to the pid table.
    Pids(Vec<(u32, u32)>),
    Events(Box<EventColumns>),
    /// Spawns: (parent, child) as pid table indices, and the spawn's id.
    Tree(Vec<(u32, u32, u64)>),
}

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    Corrupt { offset: u64, reason: &'static str },
    UnsupportedVersion(u16),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_limit(u64::from(MAX_FRAME))
}

pub struct Writer<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a file: magic, version, header frame.
    pub fn new(mut out: W, header: Header) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        let mut w = Writer { out, written: 10 };
        w.frame(&Frame::Header(header), 0)?;
        Ok(w)
    }

    /// Appends a frame holding `events` events.
    pub fn frame(&mut self, frame: &Frame, events: u32) -> io::Result<()> {
        let encoded = codec()
            .serialize(frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let body = lz4_flex::compress_prepend_size(&encoded);
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&n| n <= MAX_FRAME)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
        let mut head = [0u8; HEAD];
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..8].copy_from_slice(&events.to_le_bytes());
        head[8..12].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let head_crc = crc32fast::hash(&head[..12]);
        head[12..].copy_from_slice(&head_crc.to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&body)?;
        self.written += HEAD as u64 + u64::from(len);
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

pub struct Reader<R: Read> {
    input: R,
    offset: u64,
}

/// A frame that could not be read, and how many events it said it held.
#[derive(Debug)]
pub struct Lost {
    pub offset: u64,
    pub reason: &'static str,
    pub events: Option<u32>,
}

impl<R: Read> Reader<R> {
    /// Checks magic and version and reads the header.
    pub fn open(mut input: R) -> Result<(Self, Header), Error> {
        let mut start = [0u8; 10];
        read_exact(&mut input, &mut start, 0, "shorter than a header")?;
        if &start[..8] != MAGIC {
            return Err(Error::Corrupt {
                offset: 0,
                reason: "not an elixir_scope trace file",
            });
        }
        let version = u16::from_le_bytes([start[8], start[9]]);
        if version > VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let mut r = Reader { input, offset: 10 };
        match r.next() {
            Ok(Some((Frame::Header(h), _))) => Ok((r, h)),
            Ok(_) => Err(Error::Corrupt {
                offset: 10,
                reason: "no header frame",
            }),
            Err(lost) => Err(Error::Corrupt {
                offset: lost.offset,
                reason: lost.reason,
            }),
        }
    }

    /// The next frame and the events it holds; `Ok(None)` at the end. A
    /// frame that cannot be read is `Err(Lost)`; after a damaged head or a
    /// short read nothing further can be found (`events` is `None`, or the
    /// reason is "truncated frame"), after a bad body checksum or body the
    /// next frame can still be tried.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(Frame, u32)>, Lost> {
        let at = self.offset;
        let lost = |reason, events| Lost {
            offset: at,
            reason,
            events,
        };
        let mut head = [0u8; HEAD];
        match self.input.read(&mut head[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(_) => return Err(lost("unreadable", None)),
        }
        read_exact(&mut self.input, &mut head[1..], at, "truncated frame head")
            .map_err(|_| lost("truncated frame head", None))?;
        let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let (len, events, crc) = (word(0), word(4), word(8));
        if crc32fast::hash(&head[..12]) != word(12) {
            return Err(lost("damaged frame head", None));
        }
        if len > MAX_FRAME {
            return Err(lost("frame length out of bounds", None));
        }
        let mut body = vec![0u8; len as usize];
        read_exact(&mut self.input, &mut body, at, "truncated frame")
            .map_err(|_| lost("truncated frame", Some(events)))?;
        self.offset += HEAD as u64 + u64::from(len);
        if crc32fast::hash(&body) != crc {
            return Err(lost("checksum mismatch", Some(events)));
        }
        let decoded = body
            .get(..4)
            .map(|n| u32::from_le_bytes(n.try_into().expect("4 bytes")))
            .filter(|&n| n <= MAX_FRAME)
            .and_then(|_| lz4_flex::decompress_size_prepended(&body).ok())
            .ok_or_else(|| lost("bad compression", Some(events)))?;
        let frame = codec()
            .deserialize(&decoded)
            .ok()
            .filter(|f| !matches!(f, Frame::Events(c) if !c.check()))
            .ok_or_else(|| lost("undecodable frame", Some(events)))?;
        Ok(Some((frame, events)))
    }

    /// Where the next frame starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

fn read_exact(
    input: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
    reason: &'static str,
) -> Result<(), Error> {
    input
        .read_exact(buf)
        .map_err(|_| Error::Corrupt { offset, reason })
}

#[cfg(test)]
mod tests;
