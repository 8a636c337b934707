//! The transaction-layer fuzz targets `recover_log` and `tx_sequence`: image building, input
//! decoding and the per-input checks (each panics on a finding).
//!
//! Shared through `#[path]` with the stable replay test `ptm/tests/ptm/fuzz_corpus.rs`, so it
//! depends on std, ptm and xxhash-rust only (all of them dependencies of ptm).
//!
//! ## `recover_log` input
//!
//! The image is a small pool ([`make_recover_template`]) copied in the middle of an uncommitted
//! transaction that had overflowed its lane into a heap extent. Every byte string is valid:
//!
//! | bytes | meaning |
//! |-------|---------|
//! | 0     | control: bit 0 re-hashes the log records of both lanes after the mutations (so mutated headers and data still verify), bit 1 re-hashes both commit records |
//! | 1..   | 5-byte records `(at: u32 LE, mask: u8)`: byte `at mod (lanes + table)` of the lane area followed by the heap chunk table is xored with `mask`; a trailing partial record is ignored |
//!
//! ## `tx_sequence` input
//!
//! Decoded by [`decode_program`] into top-level steps (transactions and reopens), executed on a
//! fresh pool and a model side by side, compared after every step.

use std::collections::BTreeMap;
use std::path::Path;

use ptm::{Error, PCell, Persistent, Pool, PoolOptions};

/// Cells in the root (the first [`MODEL_VALS`] are used by `tx_sequence`).
pub const ROOT_VALS: usize = 256;
/// Cells `tx_sequence` sets.
pub const MODEL_VALS: usize = 8;
/// Block slots in the root: pool offsets of allocated blocks (0 = none).
pub const SLOTS: usize = 8;

/// The root of both targets' pools.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
pub struct Root {
    /// Plain values.
    pub vals: [PCell<u64>; ROOT_VALS],
    /// Offsets of allocated blocks, 0 when empty.
    pub blocks: [PCell<u64>; SLOTS],
}

/// Layout name of both targets' pools.
pub const LAYOUT: &str = "fuzz-txn";
/// Size of the `recover_log` pool: 2 lanes of 8 KiB, 3 heap chunks.
pub const RECOVER_POOL_SIZE: u64 = 1 << 20;
/// Size of the `tx_sequence` pool.
pub const SEQUENCE_POOL_SIZE: u64 = 2 << 20;

// Lane and record layout of the format 5 pools the targets make (docs/design.md §8.1), for
// re-hashing: the log from lane offset 8, records 8-byte aligned, the commit record in the
// lane's last 64 bytes.
const LANE_LOG: usize = 8;
const REC_HEADER: usize = 32;
const REC_ALIGN: usize = 8;
const KIND_UNDO: u8 = 1;
const KIND_JUMP: u8 = 2;
const KIND_NEW: u8 = 3;
const LEN_MASK: u64 = (1 << 56) - 1;

/// Pool options of both targets.
pub fn options() -> PoolOptions {
    PoolOptions::new()
        .layout(LAYOUT)
        .lanes(2)
        .lane_size(8192)
        .force_pmem(true)
}

/// What the committed transactions of the `recover_log` template leave in `vals`.
pub fn committed_val(i: usize) -> u64 {
    if i < 4 {
        100 + i as u64
    } else {
        0
    }
}

/// The `recover_log` template: (image bytes, lane area range, chunk table range) — both ranges
/// are pool offsets. Two committed transactions (values, a slab block, a chunk run), then a copy
/// of the file taken inside a third that overwrote 200 cells (overflowing the 8 KiB lane into
/// a heap extent), freed the slab block and allocated another one.
pub fn make_recover_template(dir: &Path) -> (Vec<u8>, std::ops::Range<usize>, std::ops::Range<usize>) {
    let path = dir.join("recover-template.pool");
    let _ = std::fs::remove_file(&path);
    let pool = Pool::<Root>::create(&path, RECOVER_POOL_SIZE, &options()).expect("create the template");
    pool.transaction(|tx, r| {
        for i in 0..4 {
            r.vals[i].set(tx, committed_val(i))?;
        }
        r.blocks[0].set(tx, tx.alloc_bytes(64)?)
    })
    .expect("transaction 1");
    pool.transaction(|tx, r| r.blocks[1].set(tx, tx.alloc_bytes(70_000)?))
        .expect("transaction 2");
    let mut copy = None;
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        for (i, c) in r.vals.iter().enumerate().take(200) {
            c.set(tx, 0xdead_0000 + i as u64)?;
        }
        tx.free_bytes(r.blocks[0].get(tx))?;
        r.blocks[2].set(tx, tx.alloc_bytes(64)?)?;
        copy = Some(std::fs::read(&path).expect("copy the pool mid-transaction"));
        Err(Error::InvalidOptions("template: abort"))
    });
    assert!(
        matches!(r, Err(Error::InvalidOptions(_))) && copy.is_some(),
        "template transaction 3: {r:?}"
    );
    let g = pool.geometry();
    pool.close().expect("close the template");
    std::fs::remove_file(&path).expect("remove the template");
    let lanes = g.lanes_offset as usize..(g.lanes_offset + u64::from(g.lane_count) * g.lane_size) as usize;
    let heap = g.heap_layout();
    let table = g.heap_offset as usize..heap.chunk_off(0) as usize;
    assert!(!table.is_empty() && table.end <= copy.as_ref().unwrap().len());
    (copy.unwrap(), lanes, table)
}

/// Applies a `recover_log` input to a copy of the template (see the module docs).
pub fn decode_recover(
    template: &[u8],
    lanes: &std::ops::Range<usize>,
    table: &std::ops::Range<usize>,
    input: &[u8],
) -> Vec<u8> {
    let mut img = template.to_vec();
    let ctl = input.first().copied().unwrap_or(0);
    let span = lanes.len() + table.len();
    for rec in input.get(1..).unwrap_or(&[]).chunks_exact(5) {
        let at = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]) as usize % span;
        let pos = if at < lanes.len() {
            lanes.start + at
        } else {
            table.start + at - lanes.len()
        };
        img[pos] ^= rec[4];
    }
    let lane_size = lanes.len() / 2;
    // The superblock is the 4 KiB page before the lanes; records are hashed with its key.
    let key = ptm::internals::layout::superblock_log_key(&template[lanes.start - 4096..lanes.start]);
    for lane in [lanes.start, lanes.start + lane_size] {
        if ctl & 1 != 0 {
            rehash_log(key, &mut img[lane..lane + lane_size - 64]);
        }
        if ctl & 2 != 0 {
            let c = &mut img[lane + lane_size - 64..lane + lane_size];
            let h = ptm::internals::layout::commit_hash(c);
            c[56..64].copy_from_slice(&h.to_le_bytes());
        }
    }
    img
}

fn get(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Recomputes the hash of every record in a lane's own log area (`lane`: the lane up to its
/// commit record), from its start to the first record of an unknown kind or one that does not
/// fit (a jump ends the lane's part).
fn rehash_log(key: u64, lane: &mut [u8]) {
    let mut pos = LANE_LOG;
    while pos + REC_HEADER <= lane.len() {
        let (seq, kind_len, target) = (get(lane, pos), get(lane, pos + 8), get(lane, pos + 16));
        let (kind, len) = ((kind_len >> 56) as u8, kind_len & LEN_MASK);
        let data_len = match kind {
            KIND_UNDO if len > 0 && len <= (lane.len() - pos - REC_HEADER) as u64 => len as usize,
            KIND_NEW | KIND_JUMP => 0,
            _ => return,
        };
        let data = &lane[pos + REC_HEADER..pos + REC_HEADER + data_len];
        let h = ptm::internals::layout::encode_rec(key, seq, kind, len, target, data);
        lane[pos + 24..pos + 32].copy_from_slice(&h[24..32]);
        if kind == KIND_JUMP {
            return;
        }
        pos += (REC_HEADER + data_len).div_ceil(REC_ALIGN) * REC_ALIGN;
    }
}

/// Whether `e` is one of the errors a damaged transaction layer may be reported with.
fn is_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::CorruptLog { .. } | Error::CorruptHeap(_) | Error::CorruptMetadata { .. }
    )
}

fn read_vals(pool: &Pool<Root>) -> Result<Vec<u64>, Error> {
    pool.transaction(|tx, r| Ok(r.vals.iter().map(|c| c.get(tx)).collect()))
}

/// `recover_log`: writes the decoded image to `dir` and opens it (recovery runs). It opens or
/// fails with a damage error; once open, `check_heap` succeeds or reports `CorruptHeap`, the
/// root reads, and a second open (recovery again) succeeds with the same values. An unmutated
/// image recovers to exactly the committed state.
pub fn check_recover_log(
    dir: &Path,
    template: &[u8],
    lanes: &std::ops::Range<usize>,
    table: &std::ops::Range<usize>,
    input: &[u8],
) {
    let img = decode_recover(template, lanes, table, input);
    let path = dir.join("recover.pool");
    std::fs::write(&path, &img).expect("write the image");
    let opts = options();
    let first = match Pool::<Root>::open(&path, &opts) {
        Ok(mut pool) => {
            let heap = pool.check_heap();
            if let Err(e) = &heap {
                assert!(matches!(e, Error::CorruptHeap(_)), "check_heap: {e:?}");
                let _ = e.to_string();
            }
            let vals = read_vals(&pool).expect("a read-only transaction on a recovered pool");
            if img == template {
                let want: Vec<u64> = (0..ROOT_VALS).map(committed_val).collect();
                assert_eq!(vals, want, "recovery of the unmutated image");
                heap.as_ref().expect("the unmutated image's heap");
            }
            drop(pool);
            Some((vals, heap.is_ok()))
        }
        Err(e) => {
            assert!(is_damage(&e), "open failed with {e:?}");
            let _ = e.to_string();
            None
        }
    };
    match (Pool::<Root>::open(&path, &opts), first) {
        (Ok(mut pool), Some((vals, heap_ok))) => {
            let again = read_vals(&pool).expect("a read-only transaction after the second open");
            assert_eq!(again, vals, "the second recovery changed the root");
            let heap = pool.check_heap();
            assert_eq!(
                heap.is_ok(),
                heap_ok,
                "the second recovery changed the heap check: {heap:?}"
            );
            // Writing must not panic either (errors are fine on a damaged heap).
            let _ = pool.transaction(|tx, r| {
                r.vals[0].set(tx, 7)?;
                r.blocks[7].set(tx, tx.alloc_bytes(64)?)
            });
        }
        (Err(e), Some(_)) => panic!("opened once, but not again: {e:?}"),
        (Ok(_), None) => {} // recovery may have stopped before writing anything; fine.
        (Err(e), None) => assert!(is_damage(&e), "second open failed with {e:?}"),
    }
    std::fs::remove_file(&path).expect("remove the image");
}

/// An action inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `vals[i] = v`.
    Set(usize, u64),
    /// Allocate `size` bytes into an empty slot (nothing if the slot is full).
    Alloc(usize, u64),
    /// Free the block of a slot (nothing if it is empty).
    Free(usize),
    /// A nested transaction; `false`: it returns `Err` (aborting the whole).
    Nested(Vec<Action>, bool),
}

/// A top-level step of `tx_sequence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A transaction: commit (`true`) or abort via `Err`.
    Tx(Vec<Action>, bool),
    /// Close and reopen the pool.
    Reopen,
}

const SIZES: [u64; 8] = [8, 64, 100, 600, 3000, 40_000, 70_000, 300_000];
const MAX_STEPS: usize = 48;
const MAX_ACTIONS: usize = 200;

/// Decodes a `tx_sequence` input: bytes are read as opcodes (low 3 bits) with operands from
/// the following bytes; missing bytes read as 0.
///
/// | op | meaning |
/// |----|---------|
/// | 0  | set `vals[b % 8] = b'` (b, b' the next two bytes) |
/// | 1  | alloc `SIZES[b >> 4 & 7]` into slot `b % 8` |
/// | 2  | free slot `b % 8` |
/// | 3  | begin a nested transaction |
/// | 4  | end the innermost nested transaction: Ok if the next byte is even, else Err |
/// | 5  | commit the top-level transaction |
/// | 6  | abort the top-level transaction |
/// | 7  | reopen (commits an open transaction first) |
pub fn decode_program(input: &[u8]) -> Vec<Step> {
    let mut it = input.iter().copied();
    let mut steps = Vec::new();
    // Stack of open action lists: [top-level, nested...].
    let mut stack: Vec<Vec<Action>> = Vec::new();
    let mut actions = 0;
    fn close_all(stack: &mut Vec<Vec<Action>>) -> Vec<Action> {
        while stack.len() > 1 {
            let inner = stack.pop().unwrap();
            stack.last_mut().unwrap().push(Action::Nested(inner, true));
        }
        stack.pop().unwrap_or_default()
    }
    while steps.len() < MAX_STEPS && actions < MAX_ACTIONS {
        let Some(b) = it.next() else { break };
        let mut arg = || it.next().unwrap_or(0);
        actions += 1;
        let action = match b & 7 {
            0 => {
                let i = usize::from(arg()) % MODEL_VALS;
                Action::Set(i, u64::from(arg()) | u64::from(b) << 8)
            }
            1 => {
                let a = arg();
                Action::Alloc(usize::from(a) % SLOTS, SIZES[usize::from(a >> 4 & 7)])
            }
            2 => Action::Free(usize::from(arg()) % SLOTS),
            3 => {
                if stack.is_empty() {
                    stack.push(Vec::new());
                }
                stack.push(Vec::new());
                continue;
            }
            4 => {
                let ok = arg() % 2 == 0;
                if stack.len() > 1 {
                    let inner = stack.pop().unwrap();
                    stack.last_mut().unwrap().push(Action::Nested(inner, ok));
                }
                continue;
            }
            op => {
                if !stack.is_empty() {
                    steps.push(Step::Tx(close_all(&mut stack), op != 6));
                }
                if op == 7 {
                    steps.push(Step::Reopen);
                }
                continue;
            }
        };
        if stack.is_empty() {
            stack.push(Vec::new());
        }
        stack.last_mut().unwrap().push(action);
    }
    if !stack.is_empty() {
        steps.push(Step::Tx(close_all(&mut stack), true));
    }
    steps
}

/// The model: cell values and slots as `(offset, requested size)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    vals: [u64; MODEL_VALS],
    slots: [Option<(u64, u64)>; SLOTS],
}

#[derive(Debug)]
enum TxError {
    Ptm(Error),
    Abort,
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Ptm(e)
    }
}

/// Runs `actions` in `tx`, updating `m` (the transaction's view). Returns `Ok(false)` once a
/// nested transaction failed on purpose (the rest still runs, its errors ignored).
fn run_actions(
    pool: &Pool<Root>,
    tx: &ptm::Transaction<'_>,
    r: &Root,
    actions: &[Action],
    m: &mut Model,
    failed: &mut bool,
) -> Result<(), TxError> {
    for a in actions {
        let res: Result<(), TxError> = (|| {
            match a {
                Action::Set(i, v) => {
                    r.vals[*i].set(tx, *v)?;
                    m.vals[*i] = *v;
                }
                Action::Alloc(s, size) => {
                    if m.slots[*s].is_none() {
                        let off = tx.alloc_bytes(*size)?;
                        assert!(off != 0 && !m.slots.iter().flatten().any(|b| b.0 == off));
                        r.blocks[*s].set(tx, off)?;
                        m.slots[*s] = Some((off, *size));
                    }
                }
                Action::Free(s) => {
                    if let Some((off, _)) = m.slots[*s] {
                        assert_eq!(r.blocks[*s].get(tx), off, "slot {s} inside the transaction");
                        tx.free_bytes(off)?;
                        r.blocks[*s].set(tx, 0)?;
                        m.slots[*s] = None;
                    }
                }
                Action::Nested(inner, ok) => {
                    let res: Result<(), TxError> = pool.transaction(|tx, r| {
                        run_actions(pool, tx, r, inner, m, failed)?;
                        if *ok {
                            Ok(())
                        } else {
                            Err(TxError::Abort)
                        }
                    });
                    match res {
                        Ok(()) => {}
                        Err(TxError::Abort) => *failed = true,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(())
        })();
        match res {
            Err(e) if !*failed => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn assert_matches(pool: &mut Pool<Root>, m: &Model, step: usize) {
    let (vals, slots) = pool
        .transaction(|tx, r| {
            let vals: Vec<u64> = r.vals[..MODEL_VALS].iter().map(|c| c.get(tx)).collect();
            let slots: Vec<u64> = r.blocks.iter().map(|c| c.get(tx)).collect();
            Ok::<_, Error>((vals, slots))
        })
        .expect("read the root");
    assert_eq!(vals, m.vals, "values after step {step}");
    let want_slots: Vec<u64> = m.slots.iter().map(|s| s.map_or(0, |b| b.0)).collect();
    assert_eq!(slots, want_slots, "slots after step {step}");
    pool.check_heap()
        .unwrap_or_else(|e| panic!("check_heap after step {step}: {e:?}"));
    let live: BTreeMap<u64, u64> = pool
        .allocated_blocks()
        .expect("allocated_blocks")
        .into_iter()
        .collect();
    let want: BTreeMap<u64, u64> = m.slots.iter().flatten().copied().collect();
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "live blocks after step {step}"
    );
    for (off, size) in &want {
        assert!(
            live[off] >= *size,
            "block {off:#x} of {size} bytes has {}",
            live[off]
        );
    }
}

/// `tx_sequence`: writes `template` (a fresh pool image) to `dir`, runs the decoded steps and
/// compares the pool with the model after each.
pub fn check_tx_sequence(dir: &Path, template: &[u8], input: &[u8]) {
    let path = dir.join("sequence.pool");
    std::fs::write(&path, template).expect("write the pool");
    let opts = options();
    let mut pool = Pool::<Root>::open(&path, &opts).expect("open the fresh pool");
    let mut model = Model::default();
    for (n, step) in decode_program(input).iter().enumerate() {
        match step {
            Step::Reopen => {
                pool.close().expect("close");
                pool = Pool::<Root>::open(&path, &opts).expect("reopen");
                let rep = pool.recovery_report();
                let _ = format!("{rep:?}");
            }
            Step::Tx(actions, commit) => {
                let mut view = model.clone();
                let mut failed = false;
                let res: Result<(), TxError> = pool.transaction(|tx, r| {
                    run_actions(&pool, tx, r, actions, &mut view, &mut failed)?;
                    if *commit {
                        Ok(())
                    } else {
                        Err(TxError::Abort)
                    }
                });
                match res {
                    Ok(()) => {
                        assert!(*commit && !failed, "step {n} committed, yet it should abort");
                        model = view;
                    }
                    Err(TxError::Abort) => assert!(!*commit, "step {n}: unexpected abort"),
                    Err(TxError::Ptm(Error::Aborted)) => assert!(failed, "step {n}: Aborted"),
                    Err(TxError::Ptm(Error::OutOfSpace { .. })) => {}
                    Err(TxError::Ptm(e)) => panic!("step {n}: {e:?}"),
                }
            }
        }
        assert_matches(&mut pool, &model, n);
    }
    pool.close().expect("close");
    std::fs::remove_file(&path).expect("remove the pool");
}

/// A fresh `tx_sequence` pool image, made in `dir`.
pub fn make_sequence_template(dir: &Path) -> Vec<u8> {
    let path = dir.join("sequence-template.pool");
    let _ = std::fs::remove_file(&path);
    let pool = Pool::<Root>::create(&path, SEQUENCE_POOL_SIZE, &options()).expect("create the pool");
    pool.close().expect("close the pool");
    let img = std::fs::read(&path).expect("read the pool");
    std::fs::remove_file(&path).expect("remove the pool");
    img
}
