//! Saved traces: `ElixirScope.save/3` and `ElixirScope.load/2` (the format
//! is `elixir_scope_core::tracefile`). Both run on dirty I/O schedulers and
//! stream: saving reads the store in chunks under its read lock while a
//! thread compresses and writes the chunk before; loading fills a fresh
//! store frame by frame.
//!
//! Atoms and local pids are written by name (UTF-8) and by (number,
//! serial), and made again on load through the external term format:
//! atoms looked up first without creating any, at most [`MAX_NEW_ATOMS`]
//! new ones per load (a file cannot exhaust the atom table), pids as pids
//! of this node.

use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustler::{Encoder, Env, NifResult, ResourceArc, Term};

use elixir_scope_core::store::{Filter, Order, SharedStore, StoreConfig, MAX_EVENTS};
use elixir_scope_core::tracefile::columns::ColumnsBuilder;
use elixir_scope_core::tracefile::portable::{IdOrder, LoadTables, SaveTables, HOLE};
use elixir_scope_core::tracefile::{Error, Frame, Header, Reader, Writer};

use crate::atoms;
use crate::codec::{from_word, word};
use crate::nif_query::FilterMap;
use crate::resources::StoreRes;

/// Events read from the store per frame.
const FRAME_EVENTS: usize = 10_000;
/// New atoms one load may create.
const MAX_NEW_ATOMS: usize = 100_000;

/// `{:ok, %{events: n, bytes: size}}` or `{:error, reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn trace_save<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    f: FilterMap<'a>,
    path: String,
    node: String,
    saved_at: i64,
    saved_at_wall: i64,
) -> NifResult<Term<'a>> {
    let filter = crate::nif_query::filter(f)?;
    let header = Header {
        node,
        saved_at,
        saved_at_wall,
    };
    let written = File::create(&path).and_then(|file| {
        let (frames, writer) = spawn_writer(file, header);
        let events = send_frames(env, &store, &filter, &frames);
        drop(frames);
        let bytes = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the file writer panicked")))?;
        Ok((events, bytes))
    });
    Ok(match written {
        Ok((events, bytes)) => (
            atoms::ok(),
            crate::atom_map!(env, {"events" => events, "bytes" => bytes}),
        )
            .encode(env),
        Err(e) => (atoms::error(), (atoms::file(), e.to_string())).encode(env),
    })
}

/// Frames sent to the writer thread, with their event counts.
type FrameSender = SyncSender<(Frame, u32)>;

/// A thread that compresses and writes the frames it is sent, so the
/// store is read while the previous frame is written; it returns the
/// bytes written when the sender is dropped.
fn spawn_writer(file: File, header: Header) -> (FrameSender, JoinHandle<io::Result<u64>>) {
    let (tx, rx) = sync_channel::<(Frame, u32)>(2);
    let writer = std::thread::spawn(move || {
        let mut w = Writer::new(BufWriter::new(file), header)?;
        for (frame, events) in rx {
            w.frame(&frame, events)?;
        }
        let bytes = w.written();
        w.finish()?;
        Ok(bytes)
    });
    (tx, writer)
}

/// Reads the events `filter` selects in frames of [`FRAME_EVENTS`], each
/// after the table entries it names, then the process tree. Returns the
/// events sent; stops early if the writer has failed (it reports why).
fn send_frames(env: Env, store: &StoreRes, filter: &Filter, frames: &FrameSender) -> u64 {
    let mut tables = SaveTables::default();
    let mut columns = ColumnsBuilder::default();
    let mut events = 0u64;
    let hits = store.0.read().query(filter, usize::MAX, Order::Asc);
    for chunk in hits.chunks(FRAME_EVENTS) {
        store
            .0
            .read()
            .visit(chunk, |v| tables.push(&mut columns, &v));
        let count = columns.len() as u32;
        if send_tables(env, frames, &mut tables).is_err()
            || frames
                .send((Frame::Events(Box::new(columns.take())), count))
                .is_err()
        {
            return events;
        }
        events += u64::from(count);
    }
    let tree: Vec<(u32, u32, u64)> = store
        .0
        .correlator()
        .process_tree()
        .into_iter()
        .map(|(p, c, id)| (tables.pid(p), tables.pid(c), id))
        .collect();
    if send_tables(env, frames, &mut tables).is_ok() {
        let _ = frames.send((Frame::Tree(tree), 0));
    }
    events
}

/// Sends the atom names and pid numbers the tables gained.
fn send_tables(env: Env, frames: &FrameSender, tables: &mut SaveTables) -> Result<(), WriterGone> {
    let (atom_words, pid_words) = tables.take_new();
    // SAFETY: the words are atoms and local pids recorded from live terms
    // (environment-independent immediates).
    let term = |w: u64| unsafe { Term::new(env, from_word(w)) };
    let names = atom_words.iter().map(|&a| atom_name(term(a))).collect();
    let pids = pid_words.iter().map(|&p| pid_numbers(term(p))).collect();
    frames
        .send((Frame::Atoms(names), 0))
        .map_err(|_| WriterGone)?;
    frames.send((Frame::Pids(pids), 0)).map_err(|_| WriterGone)
}

/// The writer thread stopped (it failed; joining it says why).
struct WriterGone;

/// An atom's name in UTF-8, from its external format: latin-1 text
/// (`ATOM_EXT`, `SMALL_ATOM_EXT`, as `enif_term_to_binary` writes atoms
/// that are latin-1) or UTF-8 (`ATOM_UTF8_EXT`, `SMALL_ATOM_UTF8_EXT`).
fn atom_name(atom: Term) -> String {
    let bin = atom.to_binary();
    match bin.as_slice() {
        [131, 100, _, _, text @ ..] | [131, 115, _, text @ ..] => {
            text.iter().map(|&b| char::from(b)).collect()
        }
        [131, 118, _, _, text @ ..] | [131, 119, _, text @ ..] => {
            String::from_utf8_lossy(text).into_owned()
        }
        _ => String::new(),
    }
}

/// The external format of the atom `name`: `ATOM_UTF8_EXT`.
fn atom_external(name: &str) -> Option<Vec<u8>> {
    let len = u16::try_from(name.len()).ok()?;
    let mut bin = vec![131, 118];
    bin.extend_from_slice(&len.to_be_bytes());
    bin.extend_from_slice(name.as_bytes());
    Some(bin)
}

/// The word of the atom `name` if this VM has it (safe decoding creates
/// no atom).
fn existing_atom(env: Env, name: &str) -> Option<u64> {
    let (t, _) = env.binary_to_term(&atom_external(name)?)?;
    t.is_atom().then(|| word(t.as_c_arg()))
}

/// The word of the atom `name`, created; `None` if the VM refuses it (too
/// long).
fn new_atom(env: Env, name: &str) -> Option<u64> {
    // SAFETY: a well-formed ATOM_UTF8_EXT of valid UTF-8 (a `String`).
    let (t, _) = unsafe { env.binary_to_term_trusted(&atom_external(name)?) }?;
    t.is_atom().then(|| word(t.as_c_arg()))
}

/// A local pid's number and serial: the external format ends with them
/// and the creation, four bytes each.
fn pid_numbers(pid: Term) -> (u32, u32) {
    let bin = pid.to_binary();
    let n = bin.len();
    let word = |at: usize| u32::from_be_bytes(bin[at..at + 4].try_into().expect("4 bytes"));
    if n >= 12 {
        (word(n - 12), word(n - 8))
    } else {
        (0, 0)
    }
}

/// Makes pids of this node from (number, serial): the external format of
/// the calling process's pid with its number and serial replaced.
struct PidMaker {
    template: Vec<u8>,
}

impl PidMaker {
    fn new(env: Env) -> PidMaker {
        PidMaker {
            template: env.pid().encode(env).to_binary().as_slice().to_vec(),
        }
    }

    fn make(&self, env: Env, (number, serial): (u32, u32)) -> Option<u64> {
        let mut bin = self.template.clone();
        let n = bin.len();
        bin.get_mut(n.checked_sub(12)?..n - 8)?
            .copy_from_slice(&number.to_be_bytes());
        bin[n - 8..n - 4].copy_from_slice(&serial.to_be_bytes());
        let (term, _) = env.binary_to_term(&bin)?;
        crate::codec::layout::is_local_pid(term).then(|| word(term.as_c_arg()))
    }
}

/// `{:ok, store, %{events: n, lost: m, node: name, saved_at: ns}}` or
/// `{:error, reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn trace_load<'a>(env: Env<'a>, path: String, max_events: usize, partial: bool) -> Term<'a> {
    let error = |reason: Term<'a>| (atoms::error(), reason).encode(env);
    let corrupt = |offset: u64, reason: &str| {
        error((atoms::corrupt(), offset, reason.to_string()).encode(env))
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => return error((atoms::file(), e.to_string()).encode(env)),
    };
    let (mut reader, header) = match Reader::open(BufReader::new(file)) {
        Ok(opened) => opened,
        Err(Error::Corrupt { offset, reason }) => return corrupt(offset, reason),
        Err(Error::UnsupportedVersion(v)) => {
            return error((atoms::unsupported_version(), v).encode(env))
        }
        Err(Error::Io(e)) => return error((atoms::file(), e.to_string()).encode(env)),
    };
    let store = Arc::new(SharedStore::new(StoreConfig {
        max_events: max_events.min(MAX_EVENTS),
    }));
    let pids = PidMaker::new(env);
    let mut tables = LoadTables::default();
    let (mut loaded, mut lost, mut new_atoms) = (0u64, 0u64, 0usize);
    let mut ids = IdOrder::default();
    let mut tables_frozen = false;
    loop {
        let frame = match reader.next() {
            Ok(Some((frame, _))) => frame,
            Ok(None) => break,
            Err(l) if partial => {
                lost += u64::from(l.events.unwrap_or(0));
                // The lost frame may have held table entries: later table
                // frames would land at the wrong indices, so the tables
                // stop growing and events naming later entries are lost.
                tables_frozen = true;
                // Past a bad length or a short read nothing can be found.
                if l.events.is_none() || l.reason == "truncated frame" {
                    break;
                }
                continue;
            }
            Err(l) => return corrupt(l.offset, l.reason),
        };
        match frame {
            Frame::Atoms(_) | Frame::Pids(_) if tables_frozen => {}
            Frame::Atoms(names) => {
                for name in names {
                    let atom = match existing_atom(env, &name) {
                        Some(a) => Some(a),
                        None if new_atoms < MAX_NEW_ATOMS => {
                            new_atoms += 1;
                            new_atom(env, &name)
                        }
                        None => return error(atoms::too_many_atoms().encode(env)),
                    };
                    // A name the VM refuses (too long) stays a hole: events
                    // naming it are lost.
                    tables.atoms.push(atom.unwrap_or(HOLE));
                }
            }
            Frame::Pids(numbers) => tables.pids.extend(
                numbers
                    .into_iter()
                    .map(|n| pids.make(env, n).unwrap_or(HOLE)),
            ),
            Frame::Events(columns) => {
                let mut s = store.lock();
                for (row, links) in columns.rows() {
                    let in_order = ids.accepts(row.id);
                    match tables.stored(&row, &links).filter(|_| in_order) {
                        Some(stored) => {
                            ids.take(stored.event.id);
                            s.insert(stored);
                            loaded += 1;
                        }
                        None => lost += 1,
                    }
                }
            }
            Frame::Tree(edges) => {
                let mut c = store.correlator();
                for (p, ch, id) in edges {
                    if let (Some(&p), Some(&ch)) =
                        (tables.pids.get(p as usize), tables.pids.get(ch as usize))
                    {
                        c.record_spawn(p, ch, id);
                    }
                }
            }
            Frame::Header(_) => {}
        }
    }
    store.assign_after(ids.last());
    let info = crate::atom_map!(env, {
        "events" => loaded,
        "lost" => lost,
        "node" => header.node,
        "saved_at" => header.saved_at,
        "saved_at_wall" => header.saved_at_wall,
    });
    (atoms::ok(), ResourceArc::new(StoreRes(store)), info).encode(env)
}
