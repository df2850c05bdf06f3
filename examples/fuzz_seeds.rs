//! Writes seed inputs for the fuzz targets (`fuzz/`, see README "Fuzzing")
//! from a real journal: a scripted workload touching every domain (wallet,
//! share sale, order book, sessions, rebates) is journaled and snapshotted
//! by the library itself, and its frames, snapshots and directory are cut
//! into inputs in each target's format (see `ringledger::fuzzing`). Rerun
//! it after a journal format change, then minimize the corpora again:
//!
//! ```text
//! cargo run --example fuzz_seeds -- fuzz/seeds
//! ```

use std::fs;
use std::path::Path;

use ringledger::book::{Side, Stp, Tif};
use ringledger::journal::{
    check_meta, write_snapshot, Durability, JournalConfig, JournalWriter, Meta, SEGMENT_BYTES_MIN,
};
use ringledger::{
    InstrumentId, Ledger, LedgerConfig, Request, SessionName, Stamp, Stamped, Symbol,
};

/// `run` lines, one per op and a few refusals: the JSON target's seeds.
const LINES: &[&str] = &[
    r#"{"op":"open_account","account":1,"req":1}"#,
    r#"{"op":"deposit","account":1,"amount":"10.50"}"#,
    r#"{"op":"withdraw","account":1,"amount":"0.01","req":7}"#,
    r#"{"op":"transfer","from":1,"to":2,"amount":"3"}"#,
    r#"{"op":"balance","account":1}"#,
    r#"{"op":"history","account":1,"limit":10}"#,
    r#"{"op":"list_instrument","instrument":"ACME","shares":1000,"price":"12.00"}"#,
    r#"{"op":"instrument","instrument":"ACME"}"#,
    r#"{"op":"reserve","reservation":5,"account":1,"instrument":"ACME","qty":3,"ttl_ms":500,"partial":true}"#,
    r#"{"op":"confirm","reservation":5}"#,
    r#"{"op":"cancel","reservation":5}"#,
    r#"{"op":"holdings","account":1}"#,
    r#"{"op":"place","order":9,"account":1,"instrument":"ACME","side":"buy","qty":2,"price":"11.99","tif":"gtc","post_only":true,"stp":"cancel_incoming"}"#,
    r#"{"op":"place","order":10,"account":2,"instrument":"XYZ","side":"sell","type":"market","qty":2,"tif":"fok"}"#,
    r#"{"op":"amend","order":9,"qty":1,"price":"12.01"}"#,
    r#"{"op":"cancel_order","order":9}"#,
    r#"{"op":"order","order":9}"#,
    r#"{"op":"book","instrument":"ACME","depth":5}"#,
    r#"{"op":"tick","now_ms":2000}"#,
    r#"{"op":"barrier"}"#,
    r#"{"op":"digest"}"#,
    r#"{"op":"deposit","account":1,"amount":"1e3","op":"withdraw"}"#,
    r#"{"op":"deposit","account":-1,"amount":10.5,"req":0}"#,
    r#"[{"a":[1,2.5e-3,null,true,"\u00e9"]}]"#,
];

/// Amounts and prices, accepted and refused: the amount target's seeds.
const AMOUNTS: &[&str] = &[
    "10.50",
    "0.01",
    "1",
    "9223372036854775807",
    "92233720368547758.08",
    "0.000000000000000001",
    "00012.340",
    "0",
    "-1",
    "1.",
    ".5",
    "1e3",
    " 1",
    "1_000",
    "١٢",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: fuzz_seeds OUT_DIR (e.g. fuzz/seeds)")?;
    let out = Path::new(&out);
    let seeds = |target: &str, name: String, bytes: &[u8]| {
        let dir = out.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)
    };
    for (i, line) in LINES.iter().enumerate() {
        seeds("json_line", format!("line-{i:02}"), line.as_bytes())?;
    }
    for (i, amount) in AMOUNTS.iter().enumerate() {
        seeds("amount", format!("amount-{i:02}"), amount.as_bytes())?;
    }

    let journal = tempfile::tempdir()?;
    let dir = journal.path();
    let meta = Meta {
        scale: 2,
        ledger: LedgerConfig::default(),
    };
    check_meta(dir, &meta)?;
    let mut writer = JournalWriter::open(
        dir,
        JournalConfig {
            segment_bytes: SEGMENT_BYTES_MIN * 4,
            durability: Durability::Sync,
        },
    )?;
    let mut ledger = Ledger::new(LedgerConfig::default());
    let mut seq = 0;
    for (b, batch) in workload().chunks(3).enumerate() {
        let stamped: Vec<Stamped> = batch
            .iter()
            .map(|&(session, req, request)| {
                seq += 1;
                Stamped::new(
                    Stamp {
                        seq,
                        time_ms: 1_000 + seq * 10,
                        session,
                        req,
                    },
                    request,
                )
            })
            .collect();
        writer.commit(&stamped)?;
        ledger.apply_batch(&stamped, |_, _| {});
        if b % 4 == 3 {
            let path = write_snapshot(dir, &ledger, writer.chain_head())?;
            let file = fs::read(&path)?;
            seeds(
                "snapshot",
                format!("file-{seq:03}"),
                &[&[0], &file[..]].concat(),
            )?;
            // The sealed reading: seq, then the payload after the 56-byte header.
            let sealed = [&[1], &seq.to_le_bytes()[..], &file[56..]].concat();
            seeds("snapshot", format!("payload-{seq:03}"), &sealed)?;
        }
    }
    writer.close()?;

    let mut segments: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    segments.sort();
    let mut archive = Vec::new();
    // The same directory with frames and snapshots to be sealed by the target.
    let mut sealed_archive = Vec::new();
    for path in &segments {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let contents = fs::read(path)?;
        let kind = if name.ends_with(".seg") {
            // The data area, without the zeros of preallocation.
            let data = &contents[..contents.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)];
            let data = &contents[..data.len().next_multiple_of(8).min(contents.len())];
            seeds(
                "journal_frames",
                format!("segment-{name}"),
                &[&[0], &data[48..]].concat(),
            )?;
            let mut sealed_segment = data[16..24].to_vec();
            for (f, frame) in frames(&data[48..]).into_iter().enumerate() {
                seeds(
                    "journal_frames",
                    format!("frame-{name}-{f}"),
                    &[&[0], frame].concat(),
                )?;
                // The sealed reading: the frame without its length and CRC.
                // Header fields then records, as `seal_frame` reads them.
                let frame_bytes = u32::from_le_bytes(frame[16..20].try_into()?) as usize;
                let contents = [&frame[20..28], &frame[32..48], &frame[64..frame_bytes]].concat();
                let sealed = [&[1], &contents[..]].concat();
                seeds("journal_frames", format!("sealed-{name}-{f}"), &sealed)?;
                sealed_segment.extend_from_slice(&u16::try_from(contents.len())?.to_le_bytes());
                sealed_segment.extend_from_slice(&contents);
            }
            archive_file(&mut archive, 0, data);
            archive_file(&mut sealed_archive, 3, &sealed_segment);
            continue;
        } else if name.ends_with(".snap") {
            let sealed = [&contents[16..24], &contents[56..]].concat();
            archive_file(&mut sealed_archive, 4, &sealed);
            1
        } else if name == ringledger::journal::META_FILE {
            2
        } else {
            continue;
        };
        archive_file(&mut archive, kind, &contents);
        if kind == 2 {
            archive_file(&mut sealed_archive, kind, &contents);
        }
    }
    seeds("recovery", "journal".into(), &archive)?;
    seeds("recovery", "sealed".into(), &sealed_archive)?;
    Ok(())
}

/// The frames of a segment's data area, each with its padding.
fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while data.len() >= 64 {
        let frame_bytes = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes")) as usize;
        if frame_bytes == 0 {
            break;
        }
        let bytes = frame_bytes.next_multiple_of(8).min(data.len());
        frames.push(&data[..bytes]);
        data = &data[bytes..];
    }
    frames
}

/// One file of the recovery target's input (see `ringledger::fuzzing::recovery`).
fn archive_file(archive: &mut Vec<u8>, kind: u8, contents: &[u8]) {
    let len = u16::try_from(contents.len()).expect("a seed file under 64 KiB");
    archive.push(kind);
    archive.extend_from_slice(&len.to_le_bytes());
    archive.extend_from_slice(contents);
}

/// Requests from every domain, with their session and request number.
fn workload() -> Vec<(u64, u64, Request)> {
    let acme = InstrumentId(0);
    let symbol = Symbol::new("ACME").expect("a symbol");
    let place = |order, account, side, qty, price, tif| Request::Place {
        order,
        account,
        instrument: acme,
        side,
        market: false,
        tif,
        post_only: false,
        stp: Stp::CancelResting,
        qty,
        price,
    };
    vec![
        (
            0,
            0,
            Request::OpenSession {
                name: SessionName::new("gateway-1").expect("a name"),
            },
        ),
        (1, 1, Request::OpenAccount { account: 1 }),
        (1, 2, Request::OpenAccount { account: 2 }),
        (
            0,
            0,
            Request::Deposit {
                account: 1,
                amount: 100_000,
            },
        ),
        (
            0,
            0,
            Request::Deposit {
                account: 2,
                amount: 50_000,
            },
        ),
        (
            0,
            0,
            Request::CreditRebate {
                deposit_seq: 4,
                amount: 1_000,
            },
        ),
        (
            0,
            0,
            Request::Transfer {
                from: 1,
                to: 2,
                amount: 2_500,
            },
        ),
        (
            0,
            0,
            Request::Withdraw {
                account: 2,
                amount: 100,
            },
        ),
        (
            0,
            0,
            Request::ListInstrument {
                symbol,
                supply: 1_000,
                price: 1_200,
            },
        ),
        (
            1,
            3,
            Request::Reserve {
                reservation: 1,
                account: 1,
                instrument: acme,
                qty: 20,
                ttl_ms: 0,
                partial: false,
            },
        ),
        (0, 0, Request::Confirm { reservation: 1 }),
        (
            0,
            0,
            Request::Reserve {
                reservation: 2,
                account: 2,
                instrument: acme,
                qty: 5,
                ttl_ms: 50,
                partial: true,
            },
        ),
        (0, 0, Request::Cancel { reservation: 2 }),
        (0, 0, place(1, 1, Side::Sell, 10, 1_300, Tif::Gtc)),
        (0, 0, place(2, 2, Side::Buy, 4, 1_310, Tif::Ioc)),
        (0, 0, place(3, 2, Side::Buy, 3, 1_250, Tif::Gtc)),
        (
            0,
            0,
            Request::Amend {
                order: 3,
                qty: Some(2),
                price: Some(1_260),
            },
        ),
        (0, 0, Request::CancelOrder { order: 3 }),
        (
            1,
            4,
            Request::Rejected {
                code: ringledger::ErrorCode::InvalidAmount,
            },
        ),
        (0, 0, Request::Tick),
        (0, 0, Request::Balance { account: 1 }),
        (
            0,
            0,
            Request::History {
                account: 1,
                limit: 5,
            },
        ),
        (0, 0, Request::Holdings { account: 1 }),
        (0, 0, Request::Order { order: 1 }),
        (
            0,
            0,
            Request::Book {
                instrument: acme,
                depth: 3,
            },
        ),
        (0, 0, Request::Instrument { instrument: acme }),
        (0, 0, Request::Digest),
        (1, 0, Request::CloseSession),
    ]
}
