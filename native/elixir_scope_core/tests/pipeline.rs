//! End-to-end tests of the native pipeline: rings -> workers -> store.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{clock, event, seq_of};

use elixir_scope_core::breaker::BreakerState;
use elixir_scope_core::dead_letters::DeadLetter;
use elixir_scope_core::faults::Fault;
use elixir_scope_core::payload::Payload;
use elixir_scope_core::pipeline::{ConfigError, Pipeline, PipelineConfig, PipelineStats, Refused};
use elixir_scope_core::pool::PoolError;
use elixir_scope_core::ring::{Overflow, Ring};
use elixir_scope_core::store::{Order, SharedStore, StoreConfig};

/// Stops the workers and lets any sweep already under way finish (a
/// stopped worker ends after its current sweep), so what is queued next
/// stays queued.
fn stop_workers(p: &Pipeline) {
    p.stop();
    std::thread::sleep(Duration::from_millis(50));
}

fn start(config: PipelineConfig, store: &Arc<SharedStore>) -> Pipeline {
    Pipeline::start(config, store.clone(), vec![], clock).unwrap()
}

fn flush(p: &Pipeline) {
    let targets = p.flush_targets();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.is_flushed(&targets) {
        assert!(Instant::now() < deadline, "flush timed out");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn assert_accounted(s: &PipelineStats) {
    assert_eq!(s.queued, 0, "{s:?}");
    assert_eq!(s.ingested, s.stored + s.dropped(), "{s:?}");
}

#[test]
fn every_event_is_stored_once_in_per_pid_order_with_many_workers() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let config = PipelineConfig {
        shards: 4,
        ring_size: 1 << 16,
        workers: 3,
        batch_size: 64,
        ..Default::default()
    };
    let p = Arc::new(start(config, &store));
    const PRODUCERS: u64 = 4;
    const PIDS: u64 = 8;
    const PER_PID: u64 = 5_000;
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for seq in 0..PER_PID {
                    // Each producer owns two pids; batches of 50 mixed events.
                    if seq % 50 == 0 {
                        let batch = (seq..seq + 50)
                            .flat_map(|s| (0..2).map(move |k| event((t * 2 + k) * 16 + 3, s)))
                            .collect();
                        let out = p.ingest(batch);
                        assert_eq!(out.accepted, 100);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    flush(&p);
    let s = p.stats();
    assert_accounted(&s);
    assert_eq!(s.stored, PIDS * PER_PID);
    assert_eq!(s.dropped(), 0);
    let guard = store.read();
    for pid in 0..PIDS {
        let events = guard.by_pid(pid * 16 + 3, usize::MAX, Order::Asc);
        let seqs: Vec<u64> = events.iter().map(|s| seq_of(&s.event)).collect();
        assert_eq!(seqs, (0..PER_PID).collect::<Vec<_>>(), "pid {pid}");
        let ids: Vec<u64> = events.iter().map(|s| s.event.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
    assert_eq!(guard.stats().retained, PIDS * PER_PID);
    assert!(s.latency.total() > 0 && s.latency.quantile(0.5) > 0);
}

#[test]
fn floods_drop_and_count_under_both_policies() {
    for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
        let store = Arc::new(SharedStore::new(StoreConfig::default()));
        let config = PipelineConfig {
            shards: 1,
            ring_size: 64,
            overflow,
            workers: 1,
            max_idle_sleep: Duration::from_millis(50),
            ..Default::default()
        };
        let p = start(config, &store);
        for seq in 0..20_000 {
            p.ingest(vec![event(1, seq)]);
        }
        for _ in 0..7 {
            p.refuse(DeadLetter {
                at: 0,
                reason: Payload::empty(),
                event: Payload::empty(),
            });
        }
        flush(&p);
        let s = p.stats();
        assert_accounted(&s);
        assert_eq!(s.ingested, 20_007);
        assert!(s.rejected + s.overwritten > 0, "{overflow:?}: {s:?}");
        assert_eq!(store.read().stats().stored, s.stored);
    }
}

#[test]
fn events_a_full_ring_refuses_take_no_id_and_no_store_room() {
    let store = Arc::new(SharedStore::new(StoreConfig { max_events: 8 }));
    let config = PipelineConfig {
        shards: 1,
        ring_size: 4,
        workers: 1,
        ..Default::default()
    };
    let p = start(config, &store);
    stop_workers(&p);
    let out = p.ingest((0..10).map(|seq| event(1, seq)).collect());
    assert_eq!((out.accepted, out.rejected), (4, 6));
    assert_eq!(store.assigned(), 4, "refused events took no id");
    p.spawn_worker().unwrap();
    flush(&p);
    // Three more rounds: 16 held ids, 18 refusals in between.
    for round in 1..=3u64 {
        stop_workers(&p);
        p.ingest((0..10).map(|seq| event(1, 10 * round + seq)).collect());
        p.spawn_worker().unwrap();
        flush(&p);
    }
    let s = store.read().stats();
    assert_eq!((s.stored, s.retained, s.evicted), (16, 8, 8));
    assert_eq!(store.assigned(), 16);
    let held: Vec<u64> = store
        .read()
        .recent(100)
        .iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(held, (9..=16).rev().collect::<Vec<_>>());
}

#[test]
fn a_waiting_ingest_is_never_shed_and_its_refusals_are_no_drops() {
    for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
        let store = Arc::new(SharedStore::new(StoreConfig::default()));
        let config = PipelineConfig {
            shards: 1,
            ring_size: 64,
            overflow,
            ..Default::default()
        };
        let p = start(config, &store);
        p.set_shedding(1.0);
        stop_workers(&p);
        let mut waiting = p.begin_ingest(100).waiting();
        let refused: Vec<_> = (0..100)
            .filter_map(|seq| waiting.push(event(7, seq)).err())
            .collect();
        drop(waiting);
        assert_eq!(
            refused,
            vec![Refused::Full; 36],
            "{overflow:?}: full, not shed"
        );
        let s = p.stats();
        assert_eq!((s.rejected, s.overwritten, s.shed, s.queued), (0, 0, 0, 64));
        assert_eq!(p.ingest(vec![event(7, 100)]).shed, 1, "others are shed");
        p.spawn_worker().unwrap();
        flush(&p);
        let s = p.stats();
        assert_accounted(&s);
        assert_eq!(stored_seqs(&store, 7), (0..64).collect::<Vec<_>>());
    }
}

#[test]
fn a_waiting_producer_loses_nothing_through_tiny_rings() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let config = PipelineConfig {
        shards: 2,
        ring_size: 16,
        workers: 1,
        batch_size: 4,
        ..Default::default()
    };
    let p = start(config, &store);
    let pids = [0x13, 0x23, 0x33];
    let mut retries = 0u64;
    for seq in 0..20_000u64 {
        let e = event(pids[seq as usize % 3], seq);
        loop {
            let mut batch = p.begin_ingest(1).waiting();
            match batch.push(e.clone()) {
                Ok(_) => break,
                Err(Refused::Full) => {
                    retries += 1;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(Refused::Shed) => panic!("a waiting ingest is never shed"),
            }
        }
    }
    flush(&p);
    let s = p.stats();
    assert_accounted(&s);
    assert_eq!((s.stored, s.dropped()), (20_000, 0));
    assert!(retries > 0, "the rings did fill");
    for (i, &pid) in pids.iter().enumerate() {
        let want: Vec<u64> = (0..20_000).filter(|s| s % 3 == i as u64).collect();
        assert_eq!(stored_seqs(&store, pid), want, "per-process order");
    }
}

#[test]
fn a_query_read_in_chunks_equals_the_full_read() {
    use elixir_scope_core::store::Select;
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let p = start(PipelineConfig::default(), &store);
    // Several pids over several shards: arrival order differs from id order.
    for round in 0..50u64 {
        p.ingest(
            (0..40)
                .map(|i| event((i % 8) << 4 | 3, round * 40 + i))
                .collect(),
        );
    }
    flush(&p);
    let s = store.read();
    let ids = |events: Vec<elixir_scope_core::event::StoredEvent>| -> Vec<u64> {
        events.iter().map(|e| e.event.id).collect()
    };
    let (from, to) = (i64::MIN, i64::MAX);
    for order in [Order::Asc, Order::Desc] {
        for (what, full) in [
            (Select::Pid(0x33), ids(s.by_pid(0x33, usize::MAX, order))),
            (
                Select::Time { from, to },
                ids(s.by_time(from, to, usize::MAX, order)),
            ),
            (Select::Recent, {
                let mut all = ids(s.recent(usize::MAX));
                if order == Order::Asc {
                    all.reverse();
                }
                all
            }),
        ] {
            let hits = s.select(what, usize::MAX, order);
            let chunked: Vec<u64> = hits.chunks(7).flat_map(|c| ids(s.fetch(c))).collect();
            assert_eq!(chunked, full, "{what:?} {order:?}");
            assert!(!full.is_empty());
        }
    }
    let all = ids(s.recent(usize::MAX));
    assert_eq!(all.len(), 2000);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first, by id");
}

#[test]
fn a_parked_worker_is_woken_by_new_events_not_by_its_backoff() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let config = PipelineConfig {
        workers: 1,
        max_idle_sleep: Duration::from_secs(20),
        ..Default::default()
    };
    let p = start(config, &store);
    for seq in 0..3 {
        // 400 ms idle: a backoff doubling from 20 µs is then in its sleep
        // from 327 to 655 ms, ~255 ms from its end.
        std::thread::sleep(Duration::from_millis(400));
        let started = Instant::now();
        p.ingest(vec![event(1, seq)]);
        while store.read().stats().stored < seq + 1 {
            std::thread::sleep(Duration::from_micros(100));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_millis(100), "stored after {took:?}");
    }
}

#[test]
fn attached_rings_are_drained_and_get_ids() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let ring = Arc::new(Ring::new(1024, Overflow::DropNewest).unwrap());
    let p = Pipeline::start(
        PipelineConfig {
            shards: 1,
            ..Default::default()
        },
        store.clone(),
        vec![ring.clone()],
        clock,
    )
    .unwrap();
    for seq in 0..100 {
        ring.push(event(9, seq));
    }
    flush(&p);
    let recent = store.read().recent(1000);
    assert_eq!(recent.len(), 100);
    assert!(recent.iter().all(|s| s.event.id > 0));
    assert_accounted(&p.stats());
}

#[test]
fn workers_spawn_remove_and_respect_bounds() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let p = start(
        PipelineConfig {
            min_workers: 1,
            max_workers: 3,
            workers: 1,
            ..Default::default()
        },
        &store,
    );
    assert_eq!(p.worker_ids().len(), 1);
    let a = p.spawn_worker().unwrap();
    let _b = p.spawn_worker().unwrap();
    assert_eq!(p.spawn_worker(), Err(PoolError::MaxWorkersReached));
    p.remove_worker(a).unwrap();
    assert_eq!(p.remove_worker(a), Err(PoolError::NotFound));
    assert_eq!(p.worker_ids().len(), 2);
    p.scale_workers(3).unwrap();
    assert_eq!(p.stats().workers, 3);
    p.scale_workers(1).unwrap();
    assert_eq!(p.stats().workers, 1);
    assert_eq!(p.scale_workers(4), Err(PoolError::OutOfBounds));
    assert_eq!(p.scale_workers(0), Err(PoolError::OutOfBounds));

    p.ingest((0..500).map(|s| event(5, s)).collect());
    flush(&p);
    let id = p.worker_ids()[0];
    let ws = p.worker_stats(id).unwrap();
    assert_eq!(ws.events_processed, 500);
    assert!(ws.batches >= 1);
    assert!(p.worker_stats(999).is_none());
}

#[test]
fn config_is_validated_and_live_updates_apply() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let bad = |c: PipelineConfig| Pipeline::start(c, store.clone(), vec![], clock).err();
    assert_eq!(
        bad(PipelineConfig {
            shards: 0,
            ..Default::default()
        }),
        Some(ConfigError::NoShards)
    );
    assert_eq!(
        bad(PipelineConfig {
            workers: 20,
            ..Default::default()
        }),
        Some(ConfigError::BadWorkerBounds)
    );
    assert!(matches!(
        bad(PipelineConfig {
            ring_size: 1000,
            ..Default::default()
        }),
        Some(ConfigError::Ring(_))
    ));
    let p = start(PipelineConfig::default(), &store);
    p.update(|c| c.batch_size = 10).unwrap();
    assert_eq!(p.config().batch_size, 10);
    assert_eq!(
        p.update(|c| c.batch_size = 0),
        Err(ConfigError::BadBatchSize)
    );
    assert_eq!(
        p.update(|c| c.ring_size = 64),
        Err(ConfigError::FixedAtStart)
    );
    assert_eq!(p.config().batch_size, 10);
}

#[test]
fn dropping_the_pipeline_stops_its_threads() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let p = start(
        PipelineConfig {
            workers: 4,
            ..Default::default()
        },
        &store,
    );
    // Workers hold the core (and so the store) while they run.
    assert!(Arc::strong_count(&store) > 1);
    drop(p);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store) > 1 {
        assert!(Instant::now() < deadline, "worker threads still alive");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn shedding_drops_whole_processes_counts_them_and_stops() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let p = start(PipelineConfig::default(), &store);
    let pids: Vec<u64> = (0..200u64).map(|i| (i << 4) | 3).collect();
    p.set_shedding(0.5);
    for seq in 0..10 {
        p.ingest(pids.iter().map(|&pid| event(pid, seq)).collect());
    }
    flush(&p);
    let s = p.stats();
    assert_accounted(&s);
    assert!(s.shed > 0 && s.stored > 0, "{s:?}");
    assert_eq!(s.shed + s.stored, 2000);
    assert_eq!(s.shedding, 0.5);
    // Each process is kept whole or dropped whole.
    for &pid in &pids {
        let n = store.read().by_pid(pid, usize::MAX, Order::Asc).len();
        assert!(n == 0 || n == 10, "pid {pid}: {n} events");
    }
    p.set_shedding(0.0);
    p.ingest(pids.iter().map(|&pid| event(pid, 99)).collect());
    flush(&p);
    assert_eq!(p.stats().stored, s.stored + 200);
}

#[test]
fn metric_windows_report_what_was_stored_since_the_last_tick() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let p = start(PipelineConfig::default(), &store);
    p.metrics_tick();
    p.ingest((0..500).map(|s| event(7, s)).collect());
    flush(&p);
    let (last, recent) = p.metrics_tick();
    assert_eq!((last.stored, last.correlated), (500, 500));
    assert!(last.batches >= 1 && last.elapsed_ns > 0);
    assert_eq!(last.latency.total(), 500);
    assert!(last.busy_ns > 0);
    let (quiet, recent2) = p.metrics_tick();
    assert_eq!((quiet.stored, quiet.latency.total()), (0, 0));
    assert_eq!((recent.stored, recent2.stored), (500, 500));
}

fn stored_seqs(store: &SharedStore, pid: u64) -> Vec<u64> {
    store
        .read()
        .by_pid(pid, usize::MAX, Order::Asc)
        .iter()
        .map(|s| seq_of(&s.event))
        .collect()
}

#[test]
fn a_worker_panic_mid_batch_loses_nothing_and_stores_nothing_twice() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    // No worker until everything is queued: the first batch is the whole lot.
    let config = PipelineConfig {
        workers: 0,
        ..Default::default()
    };
    let p = start(config, &store);
    p.ingest((0..1000).map(|s| event(4, s)).collect());
    p.inject_fault(Fault::PanicAt {
        batches: 1,
        at: 500,
    });
    p.spawn_worker().unwrap();
    flush(&p);
    let s = p.stats();
    assert_accounted(&s);
    assert_eq!((s.stored, s.lost_in_panic, s.worker_panics), (1000, 0, 1));
    assert_eq!(stored_seqs(&store, 4), (0..1000).collect::<Vec<_>>());
}

#[test]
fn failing_store_writes_open_the_breaker_then_it_half_opens_and_closes() {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let config = PipelineConfig {
        workers: 1,
        breaker_threshold: 3,
        breaker_timeout: Duration::from_millis(50),
        ..Default::default()
    };
    let p = start(config, &store);
    p.inject_fault(Fault::Fail { batches: 3 });
    p.ingest((0..100).map(|s| event(6, s)).collect());
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.breaker().state != BreakerState::Open {
        assert!(Instant::now() < deadline, "breaker never opened");
        std::thread::sleep(Duration::from_millis(1));
    }
    let open = p.stats();
    assert_eq!(open.stored, 0, "nothing written while failing or open");
    assert_eq!(open.ingested, open.stored + open.dropped() + open.queued);
    flush(&p); // the timeout passes, a probe succeeds
    assert_eq!(p.breaker().state, BreakerState::Closed);
    assert_eq!(p.breaker().trips, 1);
    let s = p.stats();
    assert_accounted(&s);
    assert_eq!(stored_seqs(&store, 6), (0..100).collect::<Vec<_>>());
}

/// The `nice` value in a thread's /proc stat line (field 19).
#[cfg(target_os = "linux")]
fn nice_in_stat(stat: &str) -> Option<i64> {
    // Fields after the parenthesized name start at field 3.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(16)?.parse().ok()
}

/// The `nice` value of every thread of this process whose name starts
/// with `prefix`.
#[cfg(target_os = "linux")]
fn nice_of_threads(prefix: &str) -> Vec<i64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            comm.starts_with(prefix).then(|| nice_in_stat(&stat))?
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn workers_run_at_a_lower_priority_than_the_threads_that_started_them() {
    let own = nice_in_stat(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()).unwrap();
    let expected = (own + 5).min(19);
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let p = start(PipelineConfig::default(), &store);
    let deadline = Instant::now() + Duration::from_secs(5);
    // Each worker lowers its own priority as it starts.
    let nices = loop {
        let nices = nice_of_threads("elixir_scope_wo");
        let settled = !nices.is_empty() && nices.iter().all(|&n| n == expected);
        if settled || Instant::now() > deadline {
            break nices;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(!nices.is_empty(), "no worker threads found");
    assert!(
        nices.iter().all(|&n| n == expected),
        "worker nice values {nices:?}, expected {expected}"
    );
    p.stop();
}
