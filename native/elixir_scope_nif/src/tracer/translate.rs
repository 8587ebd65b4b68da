//! erl_tracer trace messages -> core events (OTP 25 shapes).
//!
//! | tag | message | opts | event |
//! |---|---|---|---|
//! | `call` | `{M, F, Args}` | | `:function_call`, data = args |
//! | `return_from` | `{M, F, Arity}` | extra = value | `:function_return` |
//! | `exception_from` | `{M, F, Arity}` | extra = `{Class, Value}` | `:function_exception` |
//! | `send`, `send_to_non_existing_process` | Msg | extra = To | `:message_send`, peer = To (`{To, Pid}` for a registered name, see [`with_holder`]) |
//! | `receive` | Msg | match_spec_result = Sender or its node | `:message_receive`, peer = Sender or its node |
//! | `spawn` | Child | extra = `{M, F, Args}` | `:process_spawn`, peer = Child |
//! | `exit` | Reason | | `:process_exit` |
//! | `link`, `unlink` | Pid | | `:process_link`, data = tag, peer = Pid |
//!
//! GenServer callbacks of the session's server modules also yield a
//! `:state_change` (data `%{old: ..., new: ...}`), pushed just before the
//! callback's return so the correlator sees it inside the callback.
//! Anything of another shape yields no event (never a panic).

use std::cell::RefCell;
use std::sync::OnceLock;

use rustler::sys::ErlNifTerm;
use rustler::{Atom, Encoder, Term};

use elixir_scope_core::event::{EventHeader, EventKind, NO_ARITY};
use elixir_scope_core::hash::WordMap;
use elixir_scope_core::payload::Payload;

use crate::atoms;
use crate::codec::event::Stamp;
use crate::codec::{from_word, layout, list_length, term, tuple, tuple_slice, word};

/// The atom words a trace message is read with, looked up once (each
/// rustler atom accessor is a `OnceLock` read).
pub struct Words {
    pub call: u64,
    pub return_from: u64,
    pub exception_from: u64,
    pub send: u64,
    pub send_to_non_existing_process: u64,
    pub receive: u64,
    pub spawn: u64,
    pub exit: u64,
    pub link: u64,
    pub unlink: u64,
    extra: Atom,
    match_spec_result: Atom,
}

impl Words {
    pub fn get() -> &'static Words {
        static WORDS: OnceLock<Words> = OnceLock::new();
        let w = |a: Atom| word(a.as_c_arg());
        WORDS.get_or_init(|| Words {
            call: w(atoms::call()),
            return_from: w(atoms::return_from()),
            exception_from: w(atoms::exception_from()),
            send: w(atoms::send()),
            send_to_non_existing_process: w(atoms::send_to_non_existing_process()),
            receive: w(atoms::receive()),
            spawn: w(atoms::spawn()),
            exit: w(atoms::exit()),
            link: w(atoms::link()),
            unlink: w(atoms::unlink()),
            extra: atoms::extra(),
            match_spec_result: atoms::match_spec_result(),
        })
    }
}

/// One trace callback's arguments.
pub struct TraceMessage<'a> {
    /// The tag's atom word.
    pub tag: u64,
    pub words: &'static Words,
    pub pid: u64,
    /// This node's atom word (0 if unknown).
    pub node: u64,
    pub message: Term<'a>,
    pub opts: Term<'a>,
    pub stamp: Stamp,
}

impl<'a> TraceMessage<'a> {
    fn opt(&self, key: Atom) -> Option<Term<'a>> {
        layout::map_get(self.opts, key)
    }

    fn header(&self, kind: EventKind) -> EventHeader {
        EventHeader {
            timestamp: self.stamp.mono,
            wall_time: self.stamp.wall,
            pid: self.pid,
            module: 0,
            function: 0,
            arity: NO_ARITY,
            kind,
            ingest_stamped: true,
        }
    }
}

/// The least bytes kept of a peer or tag (they are small: a name, an alias).
const MIN_LIMIT: usize = 256;

/// A term to encode into an event payload, with its byte limit. The term
/// is kept as its raw word (it lives in the callback's environment): a
/// `Term` drags an environment and an odd-sized tail through every move,
/// and the tracer moves a translated event several times.
#[derive(Clone, Copy)]
pub struct Pending {
    pub term: ErlNifTerm,
    pub limit: usize,
}

/// Which payloads a session captures: event data only when `data_limit`
/// is set; peers and tags always.
#[derive(Clone, Copy)]
pub struct PayloadLimits {
    pub data_limit: Option<usize>,
}

impl PayloadLimits {
    /// Event data and states: `None` when payloads are not captured.
    pub fn of(self, term: Term) -> Option<Pending> {
        let term = term.as_c_arg();
        self.data_limit.map(|limit| Pending { term, limit })
    }

    /// Peers and tags: kept whatever the payload setting, with at least
    /// `MIN_LIMIT` bytes.
    fn always(self, term: Term) -> Option<Pending> {
        let limit = self.data_limit.unwrap_or(0).max(MIN_LIMIT);
        Some(Pending {
            term: term.as_c_arg(),
            limit,
        })
    }
}

/// A translated trace message: the event's scalars, and the terms its
/// payloads are encoded from (in the ring slot).
pub struct Translated {
    pub header: EventHeader,
    pub data: Option<Pending>,
    pub peer: Option<Pending>,
}

/// The event for one trace message, if it has a shape we know.
#[inline(always)]
pub fn event(m: &TraceMessage, p: PayloadLimits) -> Option<Translated> {
    let plain = |kind, data, peer| Translated {
        header: m.header(kind),
        data,
        peer,
    };
    let (w, tag) = (m.words, m.tag);
    let t = if tag == w.call {
        let [module, function, args] = tuple::<3>(m.message)?;
        let header = mfa_header(
            m,
            EventKind::FunctionCall,
            module,
            function,
            list_length(args)?,
        )?;
        Translated {
            header,
            data: p.of(args),
            peer: None,
        }
    } else if tag == w.return_from || tag == w.exception_from {
        let kind = if tag == w.return_from {
            EventKind::FunctionReturn
        } else {
            EventKind::FunctionException
        };
        let [module, function, arity] = tuple::<3>(m.message)?;
        let header = mfa_header(m, kind, module, function, layout::small_usize(arity)?)?;
        Translated {
            header,
            data: p.of(m.opt(w.extra)?),
            peer: None,
        }
    } else if tag == w.send || tag == w.send_to_non_existing_process {
        let to = with_holder(m.opt(w.extra)?, m.node, m.stamp.mono);
        plain(EventKind::MessageSend, p.of(m.message), p.always(to))
    } else if tag == w.receive {
        // The sender's pid, or for a remote sender the VM does not name,
        // its node (see the receive match spec in `Tracer.Server`).
        let sender = m.opt(w.match_spec_result).filter(|s| {
            s.is_pid() || (s.is_atom() && s.as_c_arg() != atoms::undefined().as_c_arg())
        });
        plain(
            EventKind::MessageReceive,
            p.of(m.message),
            sender.and_then(|s| p.always(s)),
        )
    } else if tag == w.spawn {
        let mfa = m.opt(w.extra)?;
        plain(EventKind::ProcessSpawn, p.of(mfa), p.always(m.message))
    } else if tag == w.exit {
        plain(EventKind::ProcessExit, p.of(m.message), None)
    } else if tag == w.link || tag == w.unlink {
        // SAFETY: the tag is an atom (environment-independent).
        let tag_term = unsafe { Term::new(m.message.get_env(), from_word(tag)) };
        plain(
            EventKind::ProcessLink,
            p.always(tag_term),
            p.always(m.message),
        )
    } else {
        return None;
    };
    Some(t)
}

/// A send's destination as recorded: a name registered here (`name`, or
/// `{name, node}` for this node) as `{name, pid}` with the process that
/// holds it (the one the message just went to), so that its receive
/// pairs with it as with a send to that pid (several processes sent the
/// same message by name cannot be told apart by the sender alone);
/// anything else as it is. `now`: the event's monotonic stamp.
fn with_holder(to: Term, node: u64, now: i64) -> Term {
    let name = match tuple::<2>(to) {
        Some([name, at]) if word(at.as_c_arg()) == node && node != 0 => name,
        Some(_) => return to,
        None => to,
    };
    if !name.is_atom() {
        return to;
    }
    let env = to.get_env();
    let holder = HOLDERS.with(|h| h.borrow_mut().of(name, now));
    match holder {
        // SAFETY: a local pid's word is environment-independent.
        Some(pid) => (name, unsafe { Term::new(env, from_word(pid)) }).encode(env),
        None => to,
    }
}

/// How long a name's holder, once looked up, is taken as known.
const HOLDER_TTL_NS: i64 = 1_000_000;

thread_local! {
    /// Each scheduler thread's recent name lookups: a lookup in the
    /// registry from a trace callback costs ~100 ns, as much as the rest
    /// of a traced send, so a name's holder is looked up at most once a
    /// millisecond per scheduler. (Sends to a name that passed to another
    /// process within that millisecond are recorded as sent to its former
    /// holder: they stay unpaired, unless that process gets the same
    /// message from the same sender some other way.)
    static HOLDERS: RefCell<Holders> = RefCell::new(Holders::default());
}

#[derive(Default)]
struct Holders {
    /// Start of the window the entries were looked up in.
    since: i64,
    /// Name (atom word) -> its holder's pid word.
    pids: WordMap<u64, u64>,
}

impl Holders {
    fn of(&mut self, name: Term, now: i64) -> Option<u64> {
        if now.wrapping_sub(self.since) > HOLDER_TTL_NS || now < self.since {
            self.pids.clear();
            self.since = now;
        }
        let key = word(name.as_c_arg());
        if let Some(&pid) = self.pids.get(&key) {
            return Some(pid);
        }
        let env = name.get_env();
        let pid = word(env.whereis_pid(name)?.encode(env).as_c_arg());
        self.pids.insert(key, pid);
        Some(pid)
    }
}

#[inline(always)]
fn mfa_header(
    m: &TraceMessage,
    kind: EventKind,
    module: Term,
    function: Term,
    arity: usize,
) -> Option<EventHeader> {
    if !layout::is_atom(module) || !layout::is_atom(function) || arity >= NO_ARITY as usize {
        return None;
    }
    Some(EventHeader {
        module: word(module.as_c_arg()),
        function: word(function.as_c_arg()),
        arity: arity as u8,
        ..m.header(kind)
    })
}

/// The GenServer callback an event enters or leaves, if it is one:
/// `handle_call/3`, `handle_cast/2` or `handle_info/2`.
pub fn is_server_callback(e: &EventHeader) -> bool {
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
