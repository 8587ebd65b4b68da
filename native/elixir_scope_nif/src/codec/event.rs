//! Event codec: `%ElixirScope.Event{}` or the compact tuple
//! `{type, pid, module, function, arity, data, peer}` -> core `Event`, and
//! core `StoredEvent` -> `%ElixirScope.CorrelatedEvent{}`.
//!
//! Decoding validates every field and names the first bad one; it never
//! panics on user input. Events without a timestamp are stamped with the
//! call's [`Stamp`] (one clock read per NIF call, not per event).

use std::sync::OnceLock;

use rustler::sys::ErlNifTerm;
use rustler::{Atom, Encoder, Env, Term};

use elixir_scope_core::event::{
    Event, EventHeader, EventKind, EventView, Link, LinkKind, StoredEvent, NO_ARITY,
};
use elixir_scope_core::payload::Payload;
use elixir_scope_core::remote;

use super::layout::{self, Immediate};
use super::structs::Template;
use super::term;
use super::{from_word, map_from_words, tuple_slice, word};
use crate::atoms;
use crate::clock;

/// Monotonic (the BEAM's) and wall-clock (the OS's) time of one NIF call,
/// in ns.
#[derive(Clone, Copy)]
pub struct Stamp {
    pub mono: i64,
    pub wall: i64,
}

impl Stamp {
    /// Now, by the calibrated clocks of [`crate::clock`].
    pub fn now() -> Stamp {
        let mono = clock::monotonic_ns();
        Stamp {
            mono,
            wall: clock::wall_ns(mono),
        }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let buffers = self.buffers.take();
        if let Some(b) =
            buffers.filter(|b| b.bytes.capacity() + b.scratch.heap_bytes() <= MAX_SPARE_BYTES)
        {
            SPARE.with(|spare| spare.set(Some(b)));
        }
    }
}

/// The payload terms of a decoded event, not encoded yet.
pub struct Payloads<'a> {
    data: Option<Term<'a>>,
    peer: Option<Term<'a>>,
}

/// Why an event was refused.
#[derive(Clone, Copy, Debug)]
pub enum Invalid {
    NotAnEvent,
    Field(Atom, Atom),
}

impl Encoder for Invalid {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match *self {
            Invalid::NotAnEvent => atoms::not_an_event().encode(env),
            Invalid::Field(field, problem) => (field, problem).encode(env),
        }
    }
}

/// Reusable decoding context of one NIF call.
pub struct Decoder {
    pub stamp: Stamp,
    pub max_payload: usize,
    words: &'static Words,
    /// Taken from the thread's spare slot on first use (flat payloads
    /// need none), handed back on drop.
    buffers: Option<Box<Buffers>>,
}

/// The encoding buffers a decoder reuses, boxed so that handing them to
/// and from the thread's spare slot moves one pointer.
#[derive(Default)]
struct Buffers {
    bytes: Vec<u8>,
    scratch: term::Scratch,
}

thread_local! {
    /// The buffers of the last decoder dropped on this thread, so a NIF call
    /// allocates nothing for them.
    static SPARE: std::cell::Cell<Option<Box<Buffers>>> =
        const { std::cell::Cell::new(None) };
}

/// Spare buffers larger than this are freed rather than kept.
const MAX_SPARE_BYTES: usize = 1 << 16;

impl Decoder {
    pub fn new(max_payload: usize) -> Decoder {
        Decoder::with_stamp(max_payload, Stamp::now())
    }

    /// A decoder whose events default to `stamp` (taken by the caller).
    pub fn with_stamp(max_payload: usize, stamp: Stamp) -> Decoder {
        Decoder {
            stamp,
            max_payload,
            words: Words::get(),
            buffers: None,
        }
    }

    /// Decodes and checks an event; its payloads are encoded at once.
    pub fn event(&mut self, t: Term) -> Result<Event, Invalid> {
        let (header, payloads) = self.decode(t)?;
        let mut event = header.into_event(0);
        self.fill(&mut event, payloads);
        Ok(event)
    }

    /// Decodes and checks an event but leaves its payloads empty: encode
    /// them with [`Decoder::fill`] where the event will live (its ring
    /// slot), so their bytes are written once.
    #[inline(always)]
    pub fn decode<'a>(&mut self, t: Term<'a>) -> Result<(EventHeader, Payloads<'a>), Invalid> {
        let env = t.get_env();
        if let Some(e) = tuple_slice(t) {
            let [kind, pid, module, function, arity, data, peer] =
                <[ErlNifTerm; 7]>::try_from(e).map_err(|_| Invalid::NotAnEvent)?;
            let absent = ErlNifTerm::default();
            let raw = RawFields {
                kind,
                pid,
                module,
                function,
                arity,
                timestamp: absent,
                wall_time: absent,
                data,
                peer,
            };
            return self.fields(env, raw);
        }
        let f = struct_fields(t).unwrap_or_else(|| {
            field_atoms()
                .map(|key| layout::map_get(t, key).map_or(ErlNifTerm::default(), |v| v.as_c_arg()))
        });
        if f[STRUCT] != self.words.event_struct {
            return Err(Invalid::NotAnEvent);
        }
        let raw = RawFields {
            kind: f[TYPE],
            pid: f[PID],
            module: f[MODULE],
            function: f[FUNCTION],
            arity: f[ARITY],
            timestamp: f[TIMESTAMP],
            wall_time: f[WALL_TIME],
            data: f[DATA],
            peer: f[PEER],
        };
        self.fields(env, raw)
    }

    /// Encodes the payloads of a decoded event into it.
    #[inline]
    pub fn fill(&mut self, event: &mut Event, payloads: Payloads) {
        let limit = self.max_payload;
        if let Some(data) = payloads.data {
            self.payload_into(data, limit, &mut event.data);
        }
        if let Some(peer) = payloads.peer {
            self.payload_into(peer, limit, &mut event.peer);
        }
    }

    #[inline(always)]
    fn fields<'a>(
        &mut self,
        env: Env<'a>,
        f: RawFields,
    ) -> Result<(EventHeader, Payloads<'a>), Invalid> {
        // SAFETY (every `Term::new` below): the words are fields of a live
        // term of `env`.
        let term = |w| unsafe { Term::new(env, w) };
        let w = self.words;
        let kind = w
            .kind_of(f.kind)
            .ok_or_else(|| Invalid::Field(atoms::r#type(), atoms::unknown_event_type()))?;
        let pid = w
            .present(f.pid)
            .and_then(|p| local_pid(term(p)))
            .ok_or_else(|| Invalid::Field(atoms::pid(), atoms::not_a_local_pid()))?;
        let module = atom_or_nil(term, w.present(f.module))
            .ok_or_else(|| Invalid::Field(atoms::module(), atoms::not_an_atom()))?;
        let function = atom_or_nil(term, w.present(f.function))
            .ok_or_else(|| Invalid::Field(atoms::function(), atoms::not_an_atom()))?;
        let arity = match w.present(f.arity) {
            None => NO_ARITY,
            Some(a) => match layout::small_usize(term(a)) {
                Some(n) if n < NO_ARITY as usize => n as u8,
                _ => return Err(Invalid::Field(atoms::arity(), atoms::not_an_arity())),
            },
        };
        let (timestamp, ingest_stamped) =
            match time_or_nil(term, w.present(f.timestamp), atoms::timestamp)? {
                Some(ts) => (ts, false),
                None => (self.stamp.mono, true),
            };
        let wall_time =
            time_or_nil(term, w.present(f.wall_time), atoms::wall_time)?.unwrap_or(self.stamp.wall);
        // `data` is kept even when nil (a function may return nil); an
        // absent or nil `peer` means no peer.
        let payloads = Payloads {
            data: (f.data != ErlNifTerm::default()).then(|| term(f.data)),
            peer: w.present(f.peer).map(term),
        };
        let header = EventHeader {
            timestamp,
            wall_time,
            pid,
            module,
            function,
            arity,
            kind,
            ingest_stamped,
        };
        Ok((header, payloads))
    }

    /// Encodes one term, truncated past `max_payload` bytes.
    pub fn payload(&mut self, t: Term) -> Payload {
        self.payload_within(t, self.max_payload)
    }

    /// Encodes one term, truncated past `limit` bytes.
    pub fn payload_within(&mut self, t: Term, limit: usize) -> Payload {
        let mut payload = Payload::empty();
        self.payload_into(t, limit, &mut payload);
        payload
    }

    /// Encodes one term into `out` (in place), truncated past `limit` bytes.
    #[inline]
    pub fn payload_into(&mut self, t: Term, limit: usize, out: &mut Payload) {
        if term::encode_flat_into(t, limit, out) {
            return;
        }
        let buffers = self
            .buffers
            .get_or_insert_with(|| SPARE.with(|spare| spare.take()).unwrap_or_default());
        let Buffers { bytes, scratch } = &mut **buffers;
        term::encode_into(t, limit, bytes, scratch, out);
    }
}

// Positions of the `%Event{}` fields read.
const STRUCT: usize = 0;
const ARITY: usize = 1;
const DATA: usize = 2;
const FUNCTION: usize = 3;
const MODULE: usize = 4;
const PEER: usize = 5;
const PID: usize = 6;
const TIMESTAMP: usize = 7;
const TYPE: usize = 8;
const WALL_TIME: usize = 9;
const FIELDS: usize = 10;

fn field_atoms() -> [Atom; FIELDS] {
    [
        atoms::__struct__(),
        atoms::arity(),
        atoms::data(),
        atoms::function(),
        atoms::module(),
        atoms::peer(),
        atoms::pid(),
        atoms::timestamp(),
        atoms::r#type(),
        atoms::wall_time(),
    ]
}

/// Where the fields read sit among the sorted keys of an `%Event{}`, as
/// the VM sorts them (read at load from a map it built).
struct StructLayout {
    keys: [ErlNifTerm; STRUCT_KEYS],
    position: [usize; FIELDS],
}

/// Keys of `%ElixirScope.Event{}`: the fields read, and `id`.
const STRUCT_KEYS: usize = FIELDS + 1;

static STRUCT_LAYOUT: OnceLock<StructLayout> = OnceLock::new();

/// Reads the VM's key order of `%Event{}` so that [`struct_fields`] can take
/// values by position. Without direct term reads it does nothing, and
/// structs are read key by key. Call once at load.
pub fn init_struct_layout(env: Env) {
    let mut keys = [ErlNifTerm::default(); STRUCT_KEYS];
    for (k, a) in keys
        .iter_mut()
        .zip(field_atoms().iter().chain([&atoms::id()]))
    {
        *k = a.as_c_arg();
    }
    let values: Vec<ErlNifTerm> = (0..STRUCT_KEYS as i64)
        .map(|i| i.encode(env).as_c_arg())
        .collect();
    // SAFETY: equal-length arrays of atoms and small integers.
    let map = unsafe { map_from_words(env, &keys, &values) };
    let Some((sorted, _)) = map.and_then(layout::flatmap) else {
        return;
    };
    let Ok(sorted) = <[ErlNifTerm; STRUCT_KEYS]>::try_from(sorted) else {
        return;
    };
    let position = field_atoms().map(|a| sorted.iter().position(|&k| k == a.as_c_arg()));
    if position.iter().all(Option::is_some) {
        let _ = STRUCT_LAYOUT.set(StructLayout {
            keys: sorted,
            position: position.map(|p| p.unwrap_or_default()),
        });
    }
}

/// The fields of an `%Event{}` read by position: `None` when the term is
/// not a flatmap with exactly the struct's keys (or the layout is unknown).
fn struct_fields(t: Term) -> Option<[ErlNifTerm; FIELDS]> {
    let layout = STRUCT_LAYOUT.get()?;
    let (keys, values) = layout::flatmap(t)?;
    (keys == layout.keys).then(|| layout.position.map(|i| values[i]))
}

/// The raw words of an event's fields; `ErlNifTerm::default()` (0, never a
/// term) when a field is absent.
struct RawFields {
    kind: ErlNifTerm,
    pid: ErlNifTerm,
    module: ErlNifTerm,
    function: ErlNifTerm,
    arity: ErlNifTerm,
    timestamp: ErlNifTerm,
    wall_time: ErlNifTerm,
    data: ErlNifTerm,
    peer: ErlNifTerm,
}

/// Atom words the decoder compares fields with, read once (each rustler
/// atom accessor is a `OnceLock` read).
struct Words {
    nil: ErlNifTerm,
    event_struct: ErlNifTerm,
    kinds: [ErlNifTerm; EventKind::ALL.len()],
}

impl Words {
    fn get() -> &'static Words {
        static WORDS: OnceLock<Words> = OnceLock::new();
        WORDS.get_or_init(|| Words {
            nil: atoms::nil().as_c_arg(),
            event_struct: atoms::event_struct().as_c_arg(),
            kinds: EventKind::ALL.map(|k| kind_atom(k).as_c_arg()),
        })
    }

    /// The field's word unless it is absent or nil.
    #[inline(always)]
    fn present(&self, w: ErlNifTerm) -> Option<ErlNifTerm> {
        (w != ErlNifTerm::default() && w != self.nil).then_some(w)
    }

    #[inline(always)]
    fn kind_of(&self, w: ErlNifTerm) -> Option<EventKind> {
        let i = self.kinds.iter().position(|&k| k == w)?;
        Some(EventKind::ALL[i])
    }
}

fn local_pid(t: Term) -> Option<u64> {
    layout::is_local_pid(t).then_some(word(t.as_c_arg()))
}

/// Raw atom word, 0 for nil or a missing field (`w` is `None`); `None` if
/// not an atom.
fn atom_or_nil<'a>(term: impl Fn(ErlNifTerm) -> Term<'a>, w: Option<ErlNifTerm>) -> Option<u64> {
    match w {
        None => Some(0),
        Some(a) if layout::is_atom(term(a)) => Some(word(a)),
        Some(_) => None,
    }
}

fn time_or_nil<'a>(
    term: impl Fn(ErlNifTerm) -> Term<'a>,
    w: Option<ErlNifTerm>,
    field: fn() -> Atom,
) -> Result<Option<i64>, Invalid> {
    let Some(t) = w else {
        return Ok(None);
    };
    match layout::immediate(t) {
        Some(Immediate::Small(i)) => Ok(Some(i)),
        _ => term(t)
            .decode::<i64>()
            .map(Some)
            .map_err(|_| Invalid::Field(field(), atoms::not_an_integer())),
    }
}

pub fn kind_atom(kind: EventKind) -> Atom {
    match kind {
        EventKind::FunctionCall => atoms::function_call(),
        EventKind::FunctionReturn => atoms::function_return(),
        EventKind::FunctionException => atoms::function_exception(),
        EventKind::MessageSend => atoms::message_send(),
        EventKind::MessageReceive => atoms::message_receive(),
        EventKind::ProcessSpawn => atoms::process_spawn(),
        EventKind::ProcessExit => atoms::process_exit(),
        EventKind::ProcessLink => atoms::process_link(),
        EventKind::StateChange => atoms::state_change(),
        EventKind::Error => atoms::error(),
        EventKind::Custom => atoms::custom(),
    }
}

/// The link kind named by an atom (`:called_from`, `:completes`, ...).
pub fn link_kind_of(t: Term) -> Option<LinkKind> {
    [
        LinkKind::CalledFrom,
        LinkKind::Completes,
        LinkKind::Receives,
        LinkKind::SpawnedBy,
        LinkKind::CausedBy,
    ]
    .into_iter()
    .find(|&k| link_atom(k).as_c_arg() == t.as_c_arg())
}

fn link_atom(kind: LinkKind) -> Atom {
    match kind {
        LinkKind::CalledFrom => atoms::called_from(),
        LinkKind::Completes => atoms::completes(),
        LinkKind::Receives | LinkKind::RemoteReceives => atoms::receives(),
        LinkKind::SpawnedBy => atoms::spawned_by(),
        LinkKind::CausedBy => atoms::caused_by(),
        LinkKind::RemoteReceivedBy => atoms::received_by(),
    }
}

/// `{kind, id}`, or `{kind, {node, id}}` for a link to another node.
pub fn link_term<'a>(env: Env<'a>, l: Link) -> Term<'a> {
    let kind = link_atom(l.kind);
    match l
        .kind
        .is_remote()
        .then(|| remote::split(l.target))
        .flatten()
    {
        // SAFETY: the node word is an atom (immediate), recorded from a live term.
        Some((node, id)) => (kind, (unsafe { Term::new(env, from_word(node)) }, id)).encode(env),
        None => (kind, l.target).encode(env),
    }
}

/// Builds `%ElixirScope.Event{}` and `%ElixirScope.CorrelatedEvent{}`
/// terms for one NIF call: struct templates whose key tuples every struct
/// shares (see [`super::structs`]), and the common float values made once.
pub struct StructEncoder<'a> {
    env: Env<'a>,
    event: Template<'a, 11>,
    correlated: Template<'a, 9>,
    nil: ErlNifTerm,
    event_module: ErlNifTerm,
    correlated_module: ErlNifTerm,
    /// Confidence 1.0, 0.5 and 0.0 (floats are boxed: made once, shared).
    confidences: [(f32, ErlNifTerm); 3],
}

impl<'a> StructEncoder<'a> {
    pub fn new(env: Env<'a>) -> Self {
        let event = Template::new(
            env,
            [
                atoms::__struct__(),
                atoms::id(),
                atoms::r#type(),
                atoms::pid(),
                atoms::timestamp(),
                atoms::wall_time(),
                atoms::module(),
                atoms::function(),
                atoms::arity(),
                atoms::data(),
                atoms::peer(),
            ],
        );
        let correlated = Template::new(
            env,
            [
                atoms::__struct__(),
                atoms::event(),
                atoms::correlation_id(),
                atoms::parent_id(),
                atoms::root_id(),
                atoms::links(),
                atoms::correlation_type(),
                atoms::correlated_at(),
                atoms::correlation_confidence(),
            ],
        );
        StructEncoder {
            env,
            event,
            correlated,
            nil: atoms::nil().as_c_arg(),
            event_module: atoms::event_struct().as_c_arg(),
            correlated_module: atoms::correlated_event_struct().as_c_arg(),
            confidences: [1.0f32, 0.5, 0.0].map(|c| (c, (c as f64).encode(env).as_c_arg())),
        }
    }

    fn opt_id(&self, id: u64) -> ErlNifTerm {
        if id == 0 {
            self.nil
        } else {
            id.encode(self.env).as_c_arg()
        }
    }

    fn atom_or_nil(&self, word: u64) -> ErlNifTerm {
        if word == 0 {
            self.nil
        } else {
            // SAFETY: `word` came from an atom term (environment-independent).
            unsafe { from_word(word) }
        }
    }

    fn confidence(&self, c: f32) -> ErlNifTerm {
        match self.confidences.iter().find(|(v, _)| *v == c) {
            Some(&(_, t)) => t,
            None => (c as f64).encode(self.env).as_c_arg(),
        }
    }

    /// `%ElixirScope.Event{}`.
    pub fn event(&self, e: &Event) -> Term<'a> {
        self.event_struct(&StoredEvent::uncorrelated(e.clone()).view())
    }

    fn event_struct(&self, e: &EventView) -> Term<'a> {
        self.build_event(self.event_fields(e))
    }

    /// `%ElixirScope.Event{}` of the fields in `event_fields`'s order.
    fn build_event(&self, fields: [ErlNifTerm; 10]) -> Term<'a> {
        let [id, kind, pid, ts, wall, module, function, arity, data, peer] = fields;
        self.event.build([
            self.event_module,
            id,
            kind,
            pid,
            ts,
            wall,
            module,
            function,
            arity,
            data,
            peer,
        ])
    }

    /// `%ElixirScope.CorrelatedEvent{}` of an event struct and the fields
    /// in `correlation_fields`'s order.
    fn build_correlated(&self, event: Term<'a>, fields: [ErlNifTerm; 7]) -> Term<'a> {
        let [cid, parent, root, links, ctype, at, confidence] = fields;
        self.correlated.build([
            self.correlated_module,
            event.as_c_arg(),
            cid,
            parent,
            root,
            links,
            ctype,
            at,
            confidence,
        ])
    }

    /// id, type, pid, timestamp, wall_time, module, function, arity, data, peer.
    fn event_fields(&self, e: &EventView) -> [ErlNifTerm; 10] {
        let env = self.env;
        let arity = if e.arity == NO_ARITY {
            self.nil
        } else {
            e.arity.encode(env).as_c_arg()
        };
        [
            self.opt_id(e.id),
            kind_atom(e.kind).as_c_arg(),
            // SAFETY: `pid` is the raw word of a local pid (an immediate).
            unsafe { from_word(e.pid) },
            e.timestamp.encode(env).as_c_arg(),
            e.wall_time.encode(env).as_c_arg(),
            self.atom_or_nil(e.module),
            self.atom_or_nil(e.function),
            arity,
            term::decode(env, e.data).as_c_arg(),
            term::decode(env, e.peer).as_c_arg(),
        ]
    }

    /// correlation_id, parent_id, root_id, links, correlation_type,
    /// correlated_at, correlation_confidence.
    fn correlation_fields(&self, c: &EventView) -> [ErlNifTerm; 7] {
        let env = self.env;
        let links: Vec<Term> = c.links.iter().map(|l| link_term(env, l)).collect();
        let correlated = c.correlation_type.is_some();
        let or_nil = |v: ErlNifTerm| if correlated { v } else { self.nil };
        [
            self.opt_id(c.correlation_id),
            self.opt_id(c.parent_id),
            self.opt_id(c.root_id),
            links.encode(env).as_c_arg(),
            c.correlation_type
                .map_or(self.nil, |k| kind_atom(k).as_c_arg()),
            or_nil(c.correlated_at.encode(env).as_c_arg()),
            or_nil(self.confidence(c.confidence)),
        ]
    }

    /// `%ElixirScope.CorrelatedEvent{}`.
    pub fn stored(&self, c: &EventView) -> Term<'a> {
        self.build_correlated(self.event_struct(c), self.correlation_fields(c))
    }

    /// The event as one flat tuple, `ElixirScope.Cluster.Local.compact/1`'s
    /// form: the event fields then the correlation fields, in the order of
    /// `event_fields` and `correlation_fields`. Cheaper to send to another
    /// node than structs, whose maps repeat their keys there.
    pub fn compact(&self, c: &EventView) -> Term<'a> {
        let mut fields = Vec::with_capacity(17);
        fields.extend(self.event_fields(c));
        fields.extend(self.correlation_fields(c));
        // SAFETY: live terms of `env`.
        let tuple = unsafe {
            rustler::sys::enif_make_tuple_from_array(self.env.as_c_arg(), fields.as_ptr(), 17)
        };
        // SAFETY: just made in `env`.
        unsafe { Term::new(self.env, tuple) }
    }

    /// The `%CorrelatedEvent{}` of a tuple [`compact`](Self::compact)
    /// made (maybe on another node), its timestamp moved by `-offset`;
    /// `None` when `t` is not such a tuple.
    pub fn expand(&self, t: Term<'a>, offset: i64) -> Option<Term<'a>> {
        let fields: &[ErlNifTerm; 17] = tuple_slice(t)?.try_into().ok()?;
        let mut event: [ErlNifTerm; 10] = fields[..10].try_into().ok()?;
        // SAFETY: an element of a live tuple of `env`.
        let ts: i64 = unsafe { Term::new(self.env, event[3]) }.decode().ok()?;
        event[3] = ts.checked_sub(offset)?.encode(self.env).as_c_arg();
        let correlation = fields[10..].try_into().ok()?;
        Some(self.build_correlated(self.build_event(event), correlation))
    }

    /// A list of `%CorrelatedEvent{}`.
    pub fn stored_list(&self, events: &[StoredEvent]) -> Term<'a> {
        self.list(events.iter().map(|s| self.stored(&s.view())))
    }

    /// A list of already built terms, in order.
    pub fn list(&self, terms: impl Iterator<Item = Term<'a>>) -> Term<'a> {
        let terms: Vec<ErlNifTerm> = terms.map(|t| t.as_c_arg()).collect();
        // SAFETY: live terms of `env`.
        unsafe {
            Term::new(
                self.env,
                rustler::sys::enif_make_list_from_array(
                    self.env.as_c_arg(),
                    terms.as_ptr(),
                    terms.len() as u32,
                ),
            )
        }
    }
}

/// A decoded list: the valid events, and `(index, reason)` of the others.
pub type DecodedList = (Vec<Event>, Vec<(usize, Invalid)>);

/// Decodes every element of `events`; `None` when it is not a proper list.
pub fn decode_list(events: Term, max_payload: usize) -> Option<DecodedList> {
    let mut decoder = Decoder::new(max_payload);
    let mut good = Vec::new();
    let mut bad = Vec::new();
    super::each_in_list(events, |i, t| match decoder.event(t) {
        Ok(e) => good.push(e),
        Err(why) => bad.push((i, why)),
    })
    .ok()?;
    Some((good, bad))
}
