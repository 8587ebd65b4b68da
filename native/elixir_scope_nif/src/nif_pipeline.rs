//! Pipeline NIFs: start, ingest, flush, workers, stats, live config.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustler::{Atom, Encoder, Env, NifMap, NifResult, ResourceArc, Term};

use elixir_scope_core::breaker::{BreakerState, BreakerStats};
use elixir_scope_core::dead_letters::DeadLetter;
use elixir_scope_core::faults::Fault;
use elixir_scope_core::histogram::Snapshot;
use elixir_scope_core::metrics::Window;
use elixir_scope_core::pipeline::{ConfigError, IngestBatch, Pipeline, PipelineConfig, Refused};
use elixir_scope_core::pool::PoolError;

use crate::atoms;
use crate::codec::event::{Decoder, Invalid};
use crate::codec::layout::list_cell;
use crate::codec::list_length;
use crate::codec::term;
use crate::lean_nif::lean_nif;
use crate::nif_ring::{overflow_of, ring_error};
use crate::resources::{PipelineRes, RingRes, StoreRes};

/// The native part of `ElixirScope.Config.Layer2`, flattened by the Elixir side.
#[derive(NifMap)]
struct NativeConfig {
    shards: usize,
    ring_size: usize,
    overflow: Atom,
    batch_size: usize,
    min_workers: usize,
    max_workers: usize,
    workers: usize,
    max_idle_sleep_us: u64,
    max_payload_bytes: usize,
    breaker_threshold: u32,
    breaker_timeout_ms: u64,
}

impl NativeConfig {
    fn to_core(&self) -> Result<PipelineConfig, Atom> {
        Ok(PipelineConfig {
            shards: self.shards,
            ring_size: self.ring_size,
            overflow: overflow_of(self.overflow).ok_or(atoms::invalid_overflow_strategy())?,
            batch_size: self.batch_size,
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            workers: self.workers,
            max_idle_sleep: Duration::from_micros(self.max_idle_sleep_us),
            breaker_threshold: self.breaker_threshold,
            breaker_timeout: Duration::from_millis(self.breaker_timeout_ms),
        })
    }
}

fn config_reason(e: ConfigError) -> Atom {
    match e {
        ConfigError::Ring(r) => ring_error(r),
        ConfigError::NoShards => atoms::no_shards(),
        ConfigError::BadWorkerBounds => atoms::bad_worker_bounds(),
        ConfigError::BadBatchSize => atoms::bad_batch_size(),
        ConfigError::FixedAtStart => atoms::fixed_at_start(),
    }
}

fn pool_error(e: PoolError) -> Atom {
    match e {
        PoolError::MaxWorkersReached => atoms::max_workers_reached(),
        PoolError::NotFound => atoms::not_found(),
        PoolError::OutOfBounds => atoms::out_of_bounds(),
        PoolError::SpawnFailed => atoms::spawn_failed(),
    }
}

fn ok_or<'a, T: Encoder>(env: Env<'a>, r: Result<T, Atom>) -> Term<'a> {
    match r {
        Ok(v) => (atoms::ok(), v).encode(env),
        Err(why) => (atoms::error(), why).encode(env),
    }
}

#[rustler::nif]
fn pipeline_start<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    config: NativeConfig,
    rings: Vec<ResourceArc<RingRes>>,
) -> Term<'a> {
    crate::clock::calibrate();
    let started = config.to_core().and_then(|core_config| {
        let rings = rings.iter().map(|r| r.0.clone()).collect();
        Pipeline::start(
            core_config,
            store.0.clone(),
            rings,
            crate::clock::monotonic_ns,
        )
        .map_err(config_reason)
    });
    ok_or(
        env,
        started.map(|pipeline| {
            ResourceArc::new(PipelineRes {
                pipeline,
                max_payload: AtomicUsize::new(config.max_payload_bytes),
            })
        }),
    )
}

#[rustler::nif]
fn pipeline_update<'a>(
    env: Env<'a>,
    p: ResourceArc<PipelineRes>,
    config: NativeConfig,
) -> Term<'a> {
    let updated = config
        .to_core()
        .and_then(|next| p.pipeline.update(|c| *c = next).map_err(config_reason));
    if updated.is_ok() {
        p.max_payload
            .store(config.max_payload_bytes, Ordering::Relaxed);
    }
    match updated {
        Ok(()) => atoms::ok().encode(env),
        Err(why) => (atoms::error(), why).encode(env),
    }
}

#[rustler::nif]
fn pipeline_stop(p: ResourceArc<PipelineRes>) -> Atom {
    p.pipeline.stop();
    atoms::ok()
}

#[rustler::nif]
fn pipeline_store(p: ResourceArc<PipelineRes>) -> ResourceArc<StoreRes> {
    ResourceArc::new(StoreRes(p.pipeline.store().clone()))
}

/// A refused event as a dead letter: the reason and the event, encoded.
fn dead_letter(env: Env, decoder: &mut Decoder, why: Invalid, event: Term) -> DeadLetter {
    DeadLetter {
        at: decoder.stamp.mono,
        reason: decoder.payload(why.encode(env)),
        event: decoder.payload(event),
    }
}

fn decoder(p: &PipelineRes) -> Decoder {
    Decoder::new(p.max_payload.load(Ordering::Relaxed))
}

/// An ingest of `p`: never shed when `mode` is `:wait` (a producer that
/// waits for room), else subject to load shedding.
fn begin<'p>(p: &'p PipelineRes, expected: usize, mode: Term) -> IngestBatch<'p> {
    let batch = p.pipeline.begin_ingest(expected);
    if mode.as_c_arg() == atoms::wait().as_c_arg() {
        batch.waiting()
    } else {
        batch
    }
}

lean_nif!("pipeline_ingest", 3, pipeline_ingest);
/// `pipeline_ingest(pipeline, event, :drop | :wait)`: `{:ok, id}` or
/// `{:error, reason}` (`:buffer_full` is retried by the caller under `:wait`).
fn pipeline_ingest<'a>(env: Env<'a>, [p, event, mode]: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    let p: &PipelineRes = p.decode()?;
    let mut decoder = decoder(p);
    Ok(match decoder.decode(event) {
        Ok((e, payloads)) => {
            match begin(p, 1, mode).push_with(e, |slot| decoder.fill(slot, payloads)) {
                Ok(id) => (atoms::ok(), id).encode(env),
                Err(Refused::Full) => (atoms::error(), atoms::buffer_full()).encode(env),
                Err(Refused::Shed) => (atoms::error(), atoms::load_shed()).encode(env),
            }
        }
        Err(why) => {
            p.pipeline
                .refuse(dead_letter(env, &mut decoder, why, event));
            (atoms::error(), (atoms::invalid_event(), why)).encode(env)
        }
    })
}

lean_nif!("pipeline_ingest_batch", 4, pipeline_ingest_batch);
/// `pipeline_ingest_batch(pipeline, events, :drop | :wait, first_index)`.
///
/// Under `:drop` every event is offered (refusals are counted) and the
/// answer is `{:ok, queued}` or `{:error, {:invalid_events, queued, bad}}`.
/// Under `:wait` the walk stops at the first event whose shard is full and
/// answers `{:full, queued, bad, index, rest}`, `rest` being the list from
/// that event on (`index` is its index), for the caller to offer again once
/// there is room (events are never shed). `bad` indexes count from
/// `first_index`.
fn pipeline_ingest_batch<'a>(
    env: Env<'a>,
    [p, events, mode, first_index]: [Term<'a>; 4],
) -> NifResult<Term<'a>> {
    let p: &PipelineRes = p.decode()?;
    let first_index: usize = first_index.decode()?;
    // A proper list is checked (and counted) before anything is queued.
    let Some(expected) = list_length(events) else {
        return Ok((atoms::error(), atoms::not_a_list()).encode(env));
    };
    let waits = mode.as_c_arg() == atoms::wait().as_c_arg();
    let mut decoder = decoder(p);
    let mut batch = begin(p, expected, mode);
    let mut bad = Vec::new();
    let mut cell = events.as_c_arg();
    let mut i = first_index;
    let mut stopped_at = None::<(usize, rustler::sys::ErlNifTerm)>;
    while let Some((head, tail)) = list_cell(env, cell) {
        // SAFETY: `head` is a live term of `env`.
        let t = unsafe { Term::new(env, head) };
        match decoder.decode(t) {
            Ok((event, payloads)) => {
                let pushed = batch.push_with(event, |slot| decoder.fill(slot, payloads));
                if waits && pushed == Err(Refused::Full) {
                    stopped_at = Some((i, cell));
                    break;
                }
            }
            Err(why) => {
                p.pipeline.refuse(dead_letter(env, &mut decoder, why, t));
                bad.push((i, why));
            }
        }
        cell = tail;
        i += 1;
    }
    let accepted = batch.finish().accepted;
    Ok(match stopped_at {
        // SAFETY: a list cell of `events`, live in `env`.
        Some((index, rest)) => {
            let rest = unsafe { Term::new(env, rest) };
            (atoms::full(), accepted, bad, index, rest).encode(env)
        }
        None if bad.is_empty() => (atoms::ok(), accepted).encode(env),
        None => (atoms::error(), (atoms::invalid_events(), accepted, bad)).encode(env),
    })
}

#[rustler::nif]
fn pipeline_flush_targets(p: ResourceArc<PipelineRes>) -> Vec<u64> {
    p.pipeline.flush_targets()
}

#[rustler::nif]
fn pipeline_flushed(p: ResourceArc<PipelineRes>, targets: Vec<u64>) -> bool {
    p.pipeline.is_flushed(&targets)
}

#[rustler::nif]
fn pipeline_spawn_worker(env: Env, p: ResourceArc<PipelineRes>) -> Term {
    ok_or(env, p.pipeline.spawn_worker().map_err(pool_error))
}

#[rustler::nif]
fn pipeline_remove_worker(env: Env, p: ResourceArc<PipelineRes>, id: u64) -> Term {
    match p.pipeline.remove_worker(id) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), pool_error(e)).encode(env),
    }
}

#[rustler::nif]
fn pipeline_scale_workers(env: Env, p: ResourceArc<PipelineRes>, n: usize) -> Term {
    match p.pipeline.scale_workers(n) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), pool_error(e)).encode(env),
    }
}

#[rustler::nif]
fn pipeline_worker_ids(p: ResourceArc<PipelineRes>) -> Vec<u64> {
    p.pipeline.worker_ids()
}

#[rustler::nif]
fn pipeline_worker_stats(env: Env, p: ResourceArc<PipelineRes>, id: u64) -> Term {
    match p.pipeline.worker_stats(id) {
        Some(w) => (
            atoms::ok(),
            crate::atom_map!(env, {
                "id" => w.id,
                "events_processed" => w.events_processed,
                "batches" => w.batches,
                "current_batch_size" => w.current_batch_size,
                "processing_time_us" => w.processing_time_us,
                "panics" => w.panics,
            }),
        )
            .encode(env),
        None => (atoms::error(), atoms::not_found()).encode(env),
    }
}

#[rustler::nif]
fn pipeline_stats(env: Env, p: ResourceArc<PipelineRes>) -> Term {
    crate::clock::calibrate();
    let s = p.pipeline.stats();
    crate::atom_map!(env, {
        "ingested" => s.ingested,
        "stored" => s.stored,
        "queued" => s.queued,
        "in_flight" => s.in_flight,
        "dropped" => crate::atom_map!(env, {
            "invalid" => s.invalid,
            "buffer_full" => s.rejected,
            "overwritten" => s.overwritten,
            "worker_crash" => s.lost_in_panic,
            "shed" => s.shed,
        }),
        "shedding" => s.shedding,
        "circuit_breaker" => breaker_map(env, p.pipeline.breaker()),
        "dropped_total" => s.dropped(),
        "batches" => s.batches,
        "workers" => s.workers,
        "worker_panics" => s.worker_panics,
        "buffer_utilization" => s.buffer_utilization,
        "shard_utilization" => s.shard_utilization,
        "ring_memory_bytes" => s.ring_memory_bytes,
        "latency_ns" => latency_map(env, &s.latency),
        "busy_ns" => s.busy_ns,
    })
}

/// Ring-to-store latency figures (ns) of a histogram snapshot.
fn latency_map<'a>(env: Env<'a>, l: &Snapshot) -> Term<'a> {
    crate::atom_map!(env, {
        "count" => l.total(),
        "mean" => l.mean(),
        "p50" => l.quantile(0.50),
        "p95" => l.quantile(0.95),
        "p99" => l.quantile(0.99),
        "max" => l.quantile(1.0),
    })
}

/// The lifetime ring-to-store latency histogram as Prometheus reads it:
/// `{cumulative counts at each of bounds_ns (ascending), count, sum_ns}`.
#[rustler::nif]
fn pipeline_latency_histogram(
    p: ResourceArc<PipelineRes>,
    bounds_ns: Vec<u64>,
) -> (Vec<u64>, u64, f64) {
    let latency = p.pipeline.stats().latency;
    (
        latency.cumulative(&bounds_ns),
        latency.total(),
        latency.sum(),
    )
}

#[rustler::nif]
fn pipeline_set_shedding(p: ResourceArc<PipelineRes>, fraction: f64) -> Atom {
    p.pipeline.set_shedding(fraction);
    atoms::ok()
}

/// Closes the current metrics window: `%{last: window, recent: window}`.
#[rustler::nif]
fn pipeline_metrics_tick(env: Env, p: ResourceArc<PipelineRes>) -> Term {
    let (last, recent) = p.pipeline.metrics_tick();
    crate::atom_map!(env, {
        "last" => window_map(env, &last),
        "recent" => window_map(env, &recent),
    })
}

fn window_map<'a>(env: Env<'a>, w: &Window) -> Term<'a> {
    crate::atom_map!(env, {
        "elapsed_ns" => w.elapsed_ns,
        "stored" => w.stored,
        "batches" => w.batches,
        "correlated" => w.correlated,
        "busy_ns" => w.busy_ns,
        "latency_ns" => latency_map(env, &w.latency),
    })
}

/// The newest `n` dead letters, newest first, and the counts.
#[rustler::nif]
fn pipeline_dead_letters(env: Env, p: ResourceArc<PipelineRes>, n: usize) -> Term {
    let letters = p.pipeline.dead_letters();
    let latest: Vec<Term> = letters
        .latest(n)
        .iter()
        .map(|l| {
            crate::atom_map!(env, {
                "at" => l.at,
                "reason" => term::decode(env, l.reason.as_bytes()),
                "event" => term::decode(env, l.event.as_bytes()),
            })
        })
        .collect();
    crate::atom_map!(env, {
        "letters" => latest,
        "total" => letters.total(),
        "evicted" => letters.evicted(),
    })
}

fn breaker_map(env: Env, b: BreakerStats) -> Term {
    let state = match b.state {
        BreakerState::Closed => atoms::closed(),
        BreakerState::Open => atoms::open(),
        BreakerState::HalfOpen => atoms::half_open(),
    };
    crate::atom_map!(env, {
        "state" => state,
        "consecutive_failures" => b.consecutive_failures,
        "trips" => b.trips,
    })
}

/// Test hook: `{:panic_at, batches, index}` or `{:fail, batches}`.
#[rustler::nif]
fn pipeline_inject_fault(p: ResourceArc<PipelineRes>, fault: Term) -> NifResult<Atom> {
    let fault = if let Ok((tag, batches, at)) = fault.decode::<(Atom, u32, usize)>() {
        (tag == atoms::panic_at()).then_some(Fault::PanicAt { batches, at })
    } else if let Ok((tag, batches)) = fault.decode::<(Atom, u32)>() {
        (tag == atoms::fail()).then_some(Fault::Fail { batches })
    } else {
        None
    };
    p.pipeline
        .inject_fault(fault.ok_or(rustler::Error::BadArg)?);
    Ok(atoms::ok())
}
