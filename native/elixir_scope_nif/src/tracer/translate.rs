//! erl_tracer trace messages -> core events (OTP 25 shapes).
//!
//! | tag | message | opts | event |
//! |---|---|---|---|
//! | `call` | `{M, F, Args}` | | `:function_call`, data = args |
//! | `return_from` | `{M, F, Arity}` | extra = value | `:function_return` |
//! | `exception_from` | `{M, F, Arity}` | extra = `{Class, Value}` | `:function_exception` |
//! | `send`, `send_to_non_existing_process` | Msg | extra = To | `:message_send`, peer = To |
//! | `receive` | Msg | match_spec_result = Sender | `:message_receive`, peer = Sender |
//! | `spawn` | Child | extra = `{M, F, Args}` | `:process_spawn`, peer = Child |
//! | `exit` | Reason | | `:process_exit` |
//! | `link`, `unlink` | Pid | | `:process_link`, data = tag, peer = Pid |
//!
//! GenServer callbacks of the session's server modules also yield a
//! `:state_change` (data `%{old: ..., new: ...}`), pushed just before the
//! callback's return so the correlator sees it inside the callback.
//! Anything of another shape yields no event (never a panic).

use rustler::{Atom, Term};

use elixir_scope_core::event::{Event, EventKind, NO_ARITY};
use elixir_scope_core::payload::Payload;

use crate::atoms;
use crate::codec::event::{Decoder, Stamp};
use crate::codec::{layout, list_length, term, tuple, tuple_slice, word};

/// One trace callback's arguments.
pub struct TraceMessage<'a> {
    pub tag: Term<'a>,
    pub pid: u64,
    pub message: Term<'a>,
    pub opts: Term<'a>,
    pub stamp: Stamp,
}

impl<'a> TraceMessage<'a> {
    fn is(&self, tag: Atom) -> bool {
        self.tag.as_c_arg() == tag.as_c_arg()
    }

    fn opt(&self, key: Atom) -> Option<Term<'a>> {
        layout::map_get(self.opts, key)
    }

    fn event(&self, kind: EventKind) -> Event {
        Event {
            id: 0,
            timestamp: self.stamp.mono,
            wall_time: self.stamp.wall,
            pid: self.pid,
            module: 0,
            function: 0,
            arity: NO_ARITY,
            kind,
            ingest_stamped: true,
            data: Payload::empty(),
            peer: Payload::empty(),
        }
    }
}

/// The least bytes kept of a peer or tag (they are small: a name, an alias).
const MIN_LIMIT: usize = 256;

/// Encodes payloads with a [`Decoder`]'s reused buffers; event data is
/// skipped when the session captures none (`limit` = `None`).
pub struct Payloads {
    decoder: Decoder,
    pub enabled: bool,
}

impl Payloads {
    pub fn new(limit: Option<usize>, stamp: Stamp) -> Payloads {
        Payloads {
            decoder: Decoder::with_stamp(limit.unwrap_or(0), stamp),
            enabled: limit.is_some(),
        }
    }

    /// Event data and states: encoded only when payloads are captured.
    pub fn of(&mut self, t: Term) -> Payload {
        if self.enabled {
            self.decoder.payload(t)
        } else {
            Payload::empty()
        }
    }

    /// Peers and tags: encoded whatever the payload setting, with at least
    /// `MIN_LIMIT` bytes.
    fn always(&mut self, t: Term) -> Payload {
        let limit = self.decoder.max_payload.max(MIN_LIMIT);
        self.decoder.payload_within(t, limit)
    }
}

/// The event for one trace message, if it has a shape we know.
pub fn event(m: &TraceMessage, p: &mut Payloads) -> Option<Event> {
    if m.is(atoms::call()) {
        let [module, function, args] = tuple::<3>(m.message)?;
        let data = p.of(args);
        // The arity is in the encoded list's header, unless it was cut.
        let arity = match term::encoded_list_length(data.as_bytes()) {
            Some(n) => n,
            None => list_length(args)?,
        };
        let mut e = mfa_event(m, EventKind::FunctionCall, module, function, arity)?;
        e.data = data;
        Some(e)
    } else if m.is(atoms::return_from()) || m.is(atoms::exception_from()) {
        let kind = if m.is(atoms::return_from()) {
            EventKind::FunctionReturn
        } else {
            EventKind::FunctionException
        };
        let [module, function, arity] = tuple::<3>(m.message)?;
        let mut e = mfa_event(m, kind, module, function, layout::small_usize(arity)?)?;
        e.data = p.of(m.opt(atoms::extra())?);
        Some(e)
    } else if m.is(atoms::send()) || m.is(atoms::send_to_non_existing_process()) {
        let mut e = m.event(EventKind::MessageSend);
        e.data = p.of(m.message);
        e.peer = p.always(m.opt(atoms::extra())?);
        Some(e)
    } else if m.is(atoms::receive()) {
        let mut e = m.event(EventKind::MessageReceive);
        e.data = p.of(m.message);
        if let Some(sender) = m.opt(atoms::match_spec_result()).filter(|s| s.is_pid()) {
            e.peer = p.always(sender);
        }
        Some(e)
    } else if m.is(atoms::spawn()) {
        let mut e = m.event(EventKind::ProcessSpawn);
        e.peer = p.always(m.message);
        e.data = p.of(m.opt(atoms::extra())?);
        Some(e)
    } else if m.is(atoms::exit()) {
        let mut e = m.event(EventKind::ProcessExit);
        e.data = p.of(m.message);
        Some(e)
    } else if m.is(atoms::link()) || m.is(atoms::unlink()) {
        let mut e = m.event(EventKind::ProcessLink);
        e.data = p.always(m.tag);
        e.peer = p.always(m.message);
        Some(e)
    } else {
        None
    }
}

fn mfa_event(
    m: &TraceMessage,
    kind: EventKind,
    module: Term,
    function: Term,
    arity: usize,
) -> Option<Event> {
    if !layout::is_atom(module) || !layout::is_atom(function) || arity >= NO_ARITY as usize {
        return None;
    }
    let mut e = m.event(kind);
    e.module = word(module.as_c_arg());
    e.function = word(function.as_c_arg());
    e.arity = arity as u8;
    Some(e)
}

/// The GenServer callback an event enters or leaves, if it is one:
/// `handle_call/3`, `handle_cast/2` or `handle_info/2`.
pub fn is_server_callback(e: &Event) -> bool {
    [
        (atoms::handle_call(), 3),
        (atoms::handle_cast(), 2),
        (atoms::handle_info(), 2),
    ]
    .iter()
    .any(|(f, a)| e.function == word(f.as_c_arg()) && e.arity == *a)
}

/// The state a callback was entered with: its last argument.
pub fn old_state<'a>(m: &TraceMessage<'a>) -> Option<Term<'a>> {
    let [_, _, args] = tuple::<3>(m.message)?;
    let mut last = None;
    crate::codec::each_in_list(args, |_, t| last = Some(t)).ok()?;
    last
}

/// The state a callback returned: `{:reply, _, s | _}`, `{:noreply, s | _}`,
/// `{:stop, _, s}` or `{:stop, _, _, s}`.
pub fn new_state<'a>(m: &TraceMessage<'a>) -> Option<Term<'a>> {
    let ret = m.opt(atoms::extra())?;
    let elems = tuple_slice(ret)?;
    let tag = *elems.first()?;
    let at = if tag == atoms::reply().as_c_arg() && elems.len() >= 3 {
        2
    } else if tag == atoms::noreply().as_c_arg() && elems.len() >= 2 {
        1
    } else if tag == atoms::stop().as_c_arg() && (3..=4).contains(&elems.len()) {
        elems.len() - 1
    } else {
        return None;
    };
    // SAFETY: an element of the live tuple `ret`.
    Some(unsafe { Term::new(ret.get_env(), elems[at]) })
}

/// `%{old: old, new: new}` from two encoded states.
pub fn state_change_data(old: &Payload, new: &Payload) -> Payload {
    let mut bytes = Vec::with_capacity(old.as_bytes().len() + new.as_bytes().len() + 24);
    term::encode_atom_map(
        &[
            (atoms::old(), old.as_bytes()),
            (atoms::new(), new.as_bytes()),
        ],
        &mut bytes,
    );
    Payload::from_bytes(&bytes)
}
