use super::columns::ColumnsBuilder;
use super::portable::{IdOrder, LoadTables, SaveTables, MAX_ID_SPAN};
use super::*;
use crate::event::test_support::event;
use crate::event::{Link, LinkKind, StoredEvent};
use crate::links::Links;
use crate::payload::{tag, varint, Payload};

/// Events whose payloads hold atoms and pids, correlated.
fn events() -> Vec<StoredEvent> {
    (1..=500u64)
        .map(|i| {
            let mut e = event(0x13 + (i % 3) * 0x100, i as i64);
            e.id = i;
            let mut data = vec![tag::TUPLE, 2, tag::ATOM];
            varint::push(&mut data, 0x40b + (i % 7) * 0x40);
            data.push(tag::PID);
            varint::push(&mut data, 0x23);
            e.data = Payload::from_bytes(&data);
            let mut s = StoredEvent::uncorrelated(e);
            s.correlation.correlation_id = i;
            s.correlation.correlation_type = Some(s.event.kind);
            s.correlation.links = Links::one(Link {
                kind: LinkKind::CalledFrom,
                target: i.saturating_sub(1),
            });
            if i % 10 == 0 {
                // A receive linked to its send on another node.
                s.correlation.links.push(Link {
                    kind: LinkKind::RemoteReceives,
                    target: crate::remote::target(0x99b, i * 3).unwrap(),
                });
            }
            s
        })
        .collect()
}

/// Saves `events` in frames of 100, with "this VM" words mapped to names
/// by an offset (standing for atom names and pid numbers).
fn save(events: &[StoredEvent]) -> Vec<u8> {
    let header = Header {
        node: "test@host".into(),
        saved_at: 1,
        saved_at_wall: 2,
    };
    let mut w = Writer::new(Vec::new(), header).unwrap();
    let mut tables = SaveTables::default();
    let mut columns = ColumnsBuilder::default();
    for chunk in events.chunks(100) {
        for s in chunk {
            tables.push(&mut columns, &s.view());
        }
        let (atoms, pids) = tables.take_new();
        w.frame(
            &Frame::Atoms(atoms.iter().map(|a| format!("a{a}")).collect()),
            0,
        )
        .unwrap();
        w.frame(
            &Frame::Pids(pids.iter().map(|&p| (p as u32, 0)).collect()),
            0,
        )
        .unwrap();
        w.frame(&Frame::Events(Box::new(columns.take())), chunk.len() as u32)
            .unwrap();
    }
    w.finish().unwrap()
}

/// Loads what `save` wrote: (events, events lost, first error).
fn load(bytes: &[u8]) -> Result<(Vec<StoredEvent>, u64, Option<Lost>), Error> {
    let (mut r, header) = Reader::open(bytes)?;
    assert_eq!(header.node, "test@host");
    let mut tables = LoadTables::default();
    let (mut out, mut lost, mut first) = (Vec::new(), 0, None);
    loop {
        match r.next() {
            Ok(None) => return Ok((out, lost, first)),
            Ok(Some((Frame::Atoms(names), _))) => tables
                .atoms
                .extend(names.iter().filter_map(|n| n.get(1..)?.parse::<u64>().ok())),
            Ok(Some((Frame::Pids(pids), _))) => {
                tables.pids.extend(pids.iter().map(|&(n, _)| u64::from(n)))
            }
            Ok(Some((Frame::Events(columns), _))) => {
                for (row, links) in columns.rows() {
                    // An event naming a table entry a lost frame held is lost too.
                    match tables.stored(&row, &links) {
                        Some(s) => out.push(s),
                        None => lost += 1,
                    }
                }
            }
            Ok(Some(_)) => {}
            Err(l) => {
                lost += u64::from(l.events.unwrap_or(0));
                let fatal = l.events.is_none() || l.reason == "truncated frame";
                first.get_or_insert(l);
                if fatal {
                    return Ok((out, lost, first));
                }
            }
        }
    }
}

#[test]
fn a_trace_round_trips_with_atoms_and_pids_as_table_entries() {
    let events = events();
    let bytes = save(&events);
    let (back, lost, first) = load(&bytes).unwrap();
    assert_eq!((lost, first.is_none()), (0, true));
    assert_eq!(back, events);
    assert!(bytes.len() < events.len() * 16, "{} bytes", bytes.len());
}

#[test]
fn corrupt_files_give_errors_and_intact_frames_never_a_panic() {
    let bytes = save(&events());
    // Truncated anywhere: an error, or fewer events with the loss counted.
    for cut in (0..bytes.len()).step_by(7) {
        match load(&bytes[..cut]) {
            Err(Error::Corrupt { .. }) => assert!(cut < 60, "header cut at {cut}"),
            Err(e) => panic!("{e:?}"),
            Ok((back, _lost, first)) => {
                assert!(back.len() < 500 || cut == bytes.len());
                assert!(first.is_some() || back.len() % 100 == 0);
            }
        }
    }
    // A flipped bit in a frame: that frame is lost and counted, the rest load.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 0x10;
    let (back, lost, first) = load(&flipped).unwrap();
    assert_eq!((back.len(), lost), (400, 100));
    assert_eq!(first.unwrap().reason, "checksum mismatch");
    // Flips everywhere never panic.
    for at in (10..bytes.len()).step_by(13) {
        let mut b = bytes.clone();
        b[at] ^= 0xFF;
        let _ = load(&b);
    }
    // Not a trace file; a newer version.
    assert!(matches!(
        Reader::open(&b"hello world, not a trace"[..]),
        Err(Error::Corrupt { offset: 0, .. })
    ));
    let mut newer = bytes.clone();
    newer[8] = 99;
    assert!(matches!(
        Reader::open(&newer[..]),
        Err(Error::UnsupportedVersion(99))
    ));
}

#[test]
fn loads_take_ids_ascending_nonzero_and_within_the_span() {
    let mut ids = IdOrder::default();
    assert!(!ids.accepts(0));
    assert!(ids.accepts(100));
    ids.take(100);
    assert!(!ids.accepts(100) && !ids.accepts(50), "not above the last");
    assert!(ids.accepts(101) && ids.accepts(100 + MAX_ID_SPAN));
    assert!(!ids.accepts(101 + MAX_ID_SPAN) && !ids.accepts(u64::MAX));
    ids.take(5000);
    assert_eq!(ids.last(), 5000);
}
