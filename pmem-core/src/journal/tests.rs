//! Journal tests over simulated files: round trips, every I/O call as a crash point with torn
//! sector subsets, crashes during replay, checkpoints, corruption in the middle, group commit.

use super::file::sim::SimFile;
use super::*;

const POOL: u64 = 64 * 1024;
const DATA: std::ops::Range<u64> = 4096..POOL - 4096;
const UUID: [u8; 16] = [0x5a; 16];
/// The bound of most tests: small, so the journal file grows in small zero-filled steps (Miri
/// runs these tests, and megabytes of simulated file are slow there).
const TEST_BOUND: u64 = 256 << 10;

fn opts() -> JournalOptions {
    JournalOptions::new().max_bytes(TEST_BOUND)
}

/// Pool memory for tests: 8-byte aligned.
struct Mem(Vec<u64>);

impl Mem {
    fn new(init: &[u8]) -> Mem {
        let mut m = Mem(vec![0u64; POOL as usize / 8]);
        m.bytes_mut().copy_from_slice(init);
        m
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: a Vec<u64> of POOL / 8 words is POOL initialized bytes.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), POOL as usize) }
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

fn start(jf: &SimFile, home: &SimFile, mem: &mut Mem, opts: &JournalOptions) -> Result<Journal, ReplayError> {
    let (prev, next, _) = replay(jf, home, &UUID, DATA)?;
    // SAFETY: `mem` outlives the journal in every test (dropped after it).
    unsafe {
        Journal::start(
            Box::new(jf.clone()),
            Box::new(home.clone()),
            Path::new("test.journal"),
            UUID,
            mem.0.as_mut_ptr().cast(),
            POOL,
            DATA,
            prev,
            next,
            opts,
        )
    }
    .map_err(|source| ReplayError::Io {
        journal: true,
        source,
    })
}

/// A deterministic xorshift.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A journal over `jf` for a memory of `size` bytes at `base` written home to `home`, the data
/// area `4096..size - 4096`, starting at epoch 1 with nothing to replay.
///
/// # Safety
///
/// `base` is valid for reads and writes of `size` bytes until the journal is dropped.
unsafe fn start_over<H: JournalFile + Clone + 'static>(
    jf: &SimFile,
    home: &H,
    name: &str,
    base: *mut u8,
    size: u64,
    opts: &JournalOptions,
) -> Journal {
    // SAFETY: the caller's contract.
    unsafe {
        Journal::start(
            Box::new(jf.clone()),
            Box::new(home.clone()),
            Path::new(name),
            UUID,
            base,
            size,
            4096..size - 4096,
            None,
            1,
            opts,
        )
    }
    .unwrap()
}
/// Replays crash images of `(jf, home)` and returns the resulting home contents.
fn recovered(jf: &SimFile, home: &SimFile) -> Result<Vec<u8>, ReplayError> {
    replay(jf, home, &UUID, DATA)?;
    Ok(home.contents())
}

/// Runs `ops` steps of a workload (random 8-byte stores, flushes, then an ordering or a
/// durability point, sometimes a checkpoint), stopping at the first I/O error. Returns the
/// images after each record (index = seq - 1 .. ), the highest seq made durable, and whether it
/// stopped on an error.
struct Run {
    /// `images[k]` = memory after record k+1 was appended (all stores were flushed).
    images: Vec<Vec<u8>>,
    initial: Vec<u8>,
    durable: u64,
    failed: bool,
}

fn workload(jf: &SimFile, home: &SimFile, seed: u64, ops: usize, bound: u64) -> Run {
    let initial = home.contents();
    let mut mem = Mem::new(&initial);
    let mut rng = Rng(seed | 1);
    let mut run = Run {
        images: Vec::new(),
        initial,
        durable: 0,
        failed: false,
    };
    let Ok(j) = start(jf, home, &mut mem, &JournalOptions::new().max_bytes(bound)) else {
        // The crash came while the journal started (its header write or sync).
        run.failed = true;
        return run;
    };
    for _ in 0..ops {
        let stores = 1 + rng.below(6);
        for _ in 0..stores {
            let off = DATA.start + rng.below((DATA.end - DATA.start) / 8) * 8;
            let v = rng.next();
            mem.bytes_mut()[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
            j.flush(off, 8);
        }
        let r = match rng.below(8) {
            0..=3 => j.order().map(|_| ()),
            4..=6 => j.drain(),
            _ => j.checkpoint(),
        };
        // The step's record was appended before any I/O of the step could fail.
        run.images.push(mem.bytes());
        if r.is_err() {
            run.failed = true;
            break;
        }
        if j.durable.load(Ordering::Acquire) > run.durable {
            run.durable = j.durable.load(Ordering::Acquire);
        }
    }
    drop(j);
    run
}

fn fresh_files() -> (SimFile, SimFile) {
    (SimFile::new(), SimFile::with_contents(vec![0u8; POOL as usize]))
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn records_replay_onto_home() {
    let (jf, home) = fresh_files();
    let run = workload(&jf, &home, 7, 50, TEST_BOUND);
    assert!(!run.failed);
    // Everything appended but perhaps not synced: a crash keeping all writes recovers the last
    // image; keeping none recovers at least the durable prefix.
    let img = recovered(&jf.crash_image(|_, _| true), &home.crash_image(|_, _| true)).unwrap();
    assert_eq!(&img, run.images.last().unwrap());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of replays of 64 KiB images: hours under Miri; logic, not unsafe code"
)]
fn every_io_call_is_a_crash_point() {
    // First count the I/O calls of the whole run.
    let seeds = [3u64, 29];
    for seed in seeds {
        for bound in [1 << 20, 64 << 10] {
            let mut n = 1;
            loop {
                let (jf, home) = fresh_files();
                // Fail the n-th I/O call of either file: that call and everything after it
                // never happen, as if the machine stopped there.
                jf.fail_in(n);
                home.fail_in(n);
                let run = workload(&jf, &home, seed, 40, bound);
                let mut rng = Rng(seed ^ n);
                for variant in 0..4 {
                    let keep = |rng: &mut Rng| -> Box<dyn FnMut(usize, usize) -> bool> {
                        match variant {
                            0 => Box::new(|_, _| false),
                            1 => Box::new(|_, _| true),
                            _ => {
                                let s = rng.next();
                                Box::new(move |w, sec| (s >> ((w * 7 + sec) % 61)) & 1 == 1)
                            }
                        }
                    };
                    let jimg = jf.crash_image(keep(&mut rng));
                    let himg = home.crash_image(keep(&mut rng));
                    let got =
                        recovered(&jimg, &himg).unwrap_or_else(|e| panic!("seed {seed} call {n}: {e:?}"));
                    check_prefix(&run, &got, seed, n);
                    // A second crash inside replay (home writes of the replay partly lost), then
                    // a full replay: the same outcome.
                    let jimg2 = jf.crash_image(keep(&mut rng));
                    let himg2 = home.crash_image(keep(&mut rng));
                    let bytes = read_all(&jimg2).unwrap();
                    if let Ok(s) = scan(&bytes, &UUID, DATA) {
                        let _ = apply(&bytes, &s, &himg2, DATA);
                        let torn_home = himg2.crash_image(|w, sec| (w + sec) % 2 == 0);
                        let again = recovered(&jimg2, &torn_home).unwrap();
                        let once = recovered(&jimg2.crash_image(|_, _| true), &himg2).unwrap();
                        assert_eq!(
                            again, once,
                            "seed {seed} call {n}: replay after a crash in replay"
                        );
                    }
                }
                if !run.failed {
                    break;
                }
                n += 1;
            }
            assert!(
                n > 20,
                "the run made {n} I/O calls: too few to be a real exploration"
            );
        }
    }
}

/// The recovered image must be the state after some record k with k at least the durable one.
fn check_prefix(run: &Run, got: &[u8], seed: u64, n: u64) {
    if got == run.initial.as_slice() && run.durable == 0 {
        return;
    }
    let ok =
        run.images.iter().enumerate().any(|(k, img)| {
            img.as_slice() == got && (k as u64 + 1) >= run.durable.min(run.images.len() as u64)
        });
    // Records appended after the last image (none: images are taken after every step) or an
    // empty prefix when nothing was durable.
    let initial_ok = run.durable == 0 && got == run.initial.as_slice();
    assert!(
        ok || initial_ok,
        "seed {seed} call {n}: recovered image is not a prefix state at or after the durable record {}",
        run.durable
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn one_sync_per_durability_point_and_none_per_ordering_point() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    let before = jf.syncs();
    for i in 0..10u64 {
        mem.bytes_mut()[8192 + i as usize * 8] = i as u8;
        j.flush(8192 + i * 8, 8);
        j.order().unwrap();
        j.flush(8192 + i * 8, 8);
        j.drain().unwrap();
    }
    assert_eq!(jf.syncs() - before, 10);
    // A drain with nothing new and everything durable does not sync.
    j.drain().unwrap();
    assert_eq!(jf.syncs() - before, 10);
    drop(j);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn corruption_inside_the_synced_range_is_named() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    for i in 0..5u64 {
        mem.bytes_mut()[8192 + i as usize * 64] = 1 + i as u8;
        j.flush(8192 + i * 64, 8);
        j.drain().unwrap();
    }
    drop(j);
    let mut bytes = jf.contents();
    // Damage the payload of the second record.
    let s = scan(&bytes, &UUID, DATA).unwrap();
    assert_eq!(s.records.len(), 5);
    let (off, _) = s.records[1];
    bytes[off as usize + RECORD_HEADER + 20] ^= 0xff;
    match scan(&bytes, &UUID, DATA) {
        Err(ReplayError::Corrupt {
            seq, later_records, ..
        }) => {
            assert_eq!(seq, s.records.len() as u64 - 3);
            assert_eq!(later_records, 3);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Repair keeps the valid prefix and drops the rest.
    let damaged = SimFile::with_contents(bytes);
    let home2 = SimFile::with_contents(vec![0u8; POOL as usize]);
    assert_eq!(repair(&damaged, &home2, &UUID, DATA).unwrap(), 4);
    let h = home2.contents();
    assert_eq!(h[8192], 1);
    assert_eq!(h[8192 + 64], 0);
    // After the repair the journal replays cleanly (a new epoch, nothing to apply).
    assert!(replay(&damaged, &home2, &UUID, DATA).is_ok());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_torn_tail_is_ignored() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    for i in 0..5u64 {
        mem.bytes_mut()[8192 + i as usize * 64] = 1 + i as u8;
        j.flush(8192 + i * 64, 8);
        j.order().unwrap();
    }
    j.sync_to(3).unwrap();
    drop(j);
    let mut bytes = jf.contents();
    let s = scan(&bytes, &UUID, DATA).unwrap();
    let (off, _) = s.records[3];
    bytes[off as usize + RECORD_HEADER + 20] ^= 0xff;
    let s2 = scan(&bytes, &UUID, DATA).unwrap();
    assert_eq!(s2.records.len(), 3);
    assert!(s2.torn_tail);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_journal_of_another_pool_is_refused() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    drop(start(&jf, &home, &mut mem, &opts()).unwrap());
    assert!(matches!(
        replay(&jf, &home, &[1; 16], DATA),
        Err(ReplayError::Mismatch)
    ));
    let mut bytes = jf.contents();
    bytes[5] ^= 1;
    bytes[2048 + 5] ^= 1;
    assert!(matches!(
        replay(&SimFile::with_contents(bytes), &home, &UUID, DATA),
        Err(ReplayError::BadHeader(_))
    ));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn an_io_error_is_sticky_and_keeps_the_durable_prefix() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    mem.bytes_mut()[8192] = 7;
    j.flush(8192, 8);
    j.drain().unwrap();
    jf.fail_in(1);
    mem.bytes_mut()[8192] = 8;
    j.flush(8192, 8);
    assert!(j.drain().is_err());
    j.flush(8192, 8);
    assert!(
        j.drain().is_err(),
        "a failed journal refuses later durability points"
    );
    drop(j);
    let got = recovered(&jf.crash_image(|_, _| false), &home.crash_image(|_, _| false)).unwrap();
    assert_eq!(got[8192], 7);
}

#[test]
#[cfg_attr(miri, ignore = "3,000 durable points with checkpoints: too slow under Miri")]
fn checkpoints_reclaim_the_journal() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &JournalOptions::new().max_bytes(64 << 10)).unwrap();
    for i in 0..3000u64 {
        let off = DATA.start + (i * 4104) % (DATA.end - DATA.start - 8);
        let off = off & !7;
        mem.bytes_mut()[off as usize..off as usize + 8].copy_from_slice(&i.to_le_bytes());
        j.flush(off, 8);
        j.drain().unwrap();
    }
    let st = j.stats();
    assert!(st.checkpoints >= 1, "{st:?}");
    assert!(st.live_bytes <= 64 << 10, "{st:?}");
    j.checkpoint().unwrap();
    assert_eq!(j.stats().live_bytes, 0);
    let expect = mem.bytes();
    drop(j);
    // After a checkpoint the home file alone holds the data, and the journal replays nothing.
    assert_eq!(
        &home.contents()[DATA.start as usize..DATA.end as usize],
        &expect[DATA.start as usize..DATA.end as usize]
    );
    let (_, _, report) = replay(&jf, &home, &UUID, DATA).unwrap();
    assert_eq!(report.records, 0);
}

#[test]
#[cfg_attr(miri, ignore = "800 durable points over 4 threads: too slow under Miri")]
fn concurrent_durability_points_share_syncs() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let base = mem.0.as_mut_ptr() as usize;
    let j = Arc::new(start(&jf, &home, &mut mem, &opts()).unwrap());
    let before = jf.syncs();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let j = Arc::clone(&j);
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let off = 8192 + t * 4096 + (i % 64) * 8;
                    // SAFETY: each thread writes its own page of the test memory, which outlives
                    // the threads (joined below).
                    unsafe { *((base + off as usize) as *mut u64) = i };
                    j.flush(off, 8);
                    j.drain().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = jf.syncs() - before;
    // Never more than one sync per durability point; usually far fewer (not asserted: it
    // depends on scheduling).
    assert!(syncs <= 800, "{syncs}");
    let expect = mem.bytes();
    drop(j);
    let got = recovered(&jf.crash_image(|_, _| false), &home.crash_image(|_, _| false)).unwrap();
    assert_eq!(got, expect);
}

/// The journal's unsafe copies (memory into records at an ordering point, memory into home pages
/// at a checkpoint) over a memory small enough for Miri, which runs this test in CI.
#[test]
fn small_memory_for_miri() {
    const SMALL: u64 = 16 << 10;
    let data = 4096..SMALL - 4096;
    let jf = SimFile::new();
    let home = SimFile::with_contents(vec![0u8; SMALL as usize]);
    let mut mem = vec![0u64; SMALL as usize / 8];
    let base: *mut u8 = mem.as_mut_ptr().cast();
    let (prev, next, _) = replay(&jf, &home, &UUID, data.clone()).unwrap();
    // SAFETY: `mem` outlives the journal (dropped after it) and is SMALL bytes.
    let j = unsafe {
        Journal::start(
            Box::new(jf.clone()),
            Box::new(home.clone()),
            Path::new("small.journal"),
            UUID,
            base,
            SMALL,
            data.clone(),
            prev,
            next,
            &JournalOptions::new().max_bytes(64 << 10),
        )
    }
    .unwrap();
    for i in 0..4u64 {
        // A store straddling two lines, then its flush.
        let off = 4096 + i * 1000 + 60;
        // SAFETY: `off + 8 <= SMALL`; the journal only reads this memory.
        unsafe {
            base.add(off as usize)
                .cast::<[u8; 8]>()
                .write_unaligned((i + 1).to_le_bytes())
        };
        j.flush(off, 8);
        if i % 2 == 0 {
            j.order().unwrap();
        } else {
            j.drain().unwrap();
        }
    }
    j.checkpoint().unwrap();
    drop(j);
    let got = home.contents();
    for i in 0..4u64 {
        let off = (4096 + i * 1000 + 60) as usize;
        assert_eq!(got[off..off + 8], (i + 1).to_le_bytes());
    }
    drop(mem);
}

/// Group commit: durability points that arrive while a sync runs share the next one. Thread 0
/// leads a sync that is held; threads 1..4 append their records and wait; once the held sync
/// ends, one more sync covers all three (each thread syncing for itself would make 4 syncs).
#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn durability_points_arriving_during_a_sync_share_the_next_one() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let base = mem.0.as_mut_ptr() as usize;
    let j = Arc::new(start(&jf, &home, &mut mem, &opts()).unwrap());
    let before = jf.syncs();
    let store = move |j: &Journal, t: u64| {
        let off = 8192 + t * 4096;
        // SAFETY: each thread writes its own word of the test memory, which outlives the
        // threads (joined below).
        unsafe { *((base + off as usize) as *mut u64) = t + 1 };
        j.flush(off, 8);
        j.drain().unwrap();
    };
    jf.hold_syncs();
    std::thread::scope(|s| {
        let j0 = Arc::clone(&j);
        s.spawn(move || store(&j0, 0));
        while jf.held_syncs() == 0 {
            std::thread::yield_now();
        }
        for t in 1..4u64 {
            let jt = Arc::clone(&j);
            s.spawn(move || store(&jt, t));
        }
        // All three are waiting for durability (their records appended) behind the held sync.
        while j.inside.load(Ordering::Acquire) < 4 {
            std::thread::yield_now();
        }
        jf.release_syncs();
    });
    assert_eq!(
        jf.syncs() - before,
        2,
        "the three waiting durability points shared one sync"
    );
    let expect = mem.bytes();
    drop(j);
    let got = recovered(&jf.crash_image(|_, _| false), &home.crash_image(|_, _| false)).unwrap();
    assert_eq!(got, expect);
}

/// A home file that counts its writes: replay writes pages in runs, not page by page.
#[derive(Debug, Clone)]
struct CountingFile {
    inner: SimFile,
    writes: Arc<AtomicU64>,
}

impl CountingFile {
    fn new(inner: &SimFile) -> CountingFile {
        CountingFile {
            inner: inner.clone(),
            writes: Arc::new(AtomicU64::new(0)),
        }
    }
    fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

impl JournalFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// Appends a checksummed record of `epoch` and `seq` (`durable_seq` as given) holding `bytes` at
/// pool offset `offset` to `buf`.
fn craft_record(buf: &mut Vec<u8>, epoch: u64, seq: u64, durable_seq: u64, offset: u64, bytes: &[u8]) {
    let at = format::begin_record(buf, epoch, seq, durable_seq);
    format::push_range_header(buf, offset, bytes.len() as u64);
    buf.extend_from_slice(bytes);
    format::finish_record(buf, at, 1);
}

/// Writes the buffered records of `j` to its file without syncing (as a large buffer does).
fn write_unsynced(j: &Journal) {
    j.write_out(&mut lock(&j.io), false).unwrap();
}

/// A journal of `n` records appended by ordering points only and written out without a sync
/// (so every record's `durable_seq` is 0): record `i` stores `i + 1` at `8192 + i * 64`.
fn ordered_journal(n: u64) -> (SimFile, SimFile) {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    for i in 0..n {
        mem.bytes_mut()[8192 + i as usize * 64] = 1 + i as u8;
        j.flush(8192 + i * 64, 8);
        j.order().unwrap();
    }
    write_unsynced(&j);
    drop(j);
    (jf, home)
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_later_record_with_a_bad_checksum_is_no_evidence_of_corruption() {
    // Records 1..=5, none synced; record 3 torn. Record 4's header then claims record 3 was
    // durable (`durable_seq` 10): with its checksum broken by that change the claim is noise (a
    // torn tail), with a matching checksum it names corruption in the middle of the journal.
    let (jf, _home) = ordered_journal(5);
    let mut bytes = jf.contents();
    let s = scan(&bytes, &UUID, DATA).unwrap();
    assert_eq!(s.records.len(), 5);
    bytes[s.records[2].0 as usize + RECORD_HEADER + 20] ^= 0xff;
    let (r4, len4) = (s.records[3].0 as usize, s.records[3].1 as usize);
    bytes[r4 + 24..r4 + 32].copy_from_slice(&10u64.to_le_bytes());
    let torn = scan(&bytes, &UUID, DATA).unwrap();
    assert_eq!(torn.records.len(), 2);
    assert!(torn.torn_tail);
    let crc = format::record_checksum(&bytes[r4..r4 + len4]);
    bytes[r4 + 36..r4 + 40].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        scan(&bytes, &UUID, DATA),
        Err(ReplayError::Corrupt {
            seq: 3,
            later_records: 2,
            ..
        })
    ));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_torn_tail_is_a_damaged_record_of_the_current_epoch_not_a_stale_one() {
    // The last record torn, nothing after it: a torn tail.
    let (jf, _home) = ordered_journal(3);
    let mut bytes = jf.contents();
    let s = scan(&bytes, &UUID, DATA).unwrap();
    bytes[s.records[2].0 as usize + RECORD_HEADER + 20] ^= 0xff;
    let torn = scan(&bytes, &UUID, DATA).unwrap();
    assert_eq!((torn.records.len(), torn.torn_tail), (2, true));
    // After a checkpoint the records of the old epoch are stale, not torn.
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    for i in 0..3u64 {
        mem.bytes_mut()[8192 + i as usize * 64] = 1 + i as u8;
        j.flush(8192 + i * 64, 8);
        j.drain().unwrap();
    }
    j.checkpoint().unwrap();
    drop(j);
    let (_, _, report) = replay(&jf, &home, &UUID, DATA).unwrap();
    assert_eq!(
        report,
        ReplayReport::default(),
        "stale records are not a torn tail"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_record_must_carry_both_the_epoch_and_the_next_sequence_number() {
    // A fresh journal (epoch 1, the next record seq 1), then a checksummed record right at the
    // records offset with one of the two wrong: neither is replayed.
    for (epoch, seq) in [(2u64, 1u64), (1, 2)] {
        let (jf, home) = fresh_files();
        let mut mem = Mem::new(&home.contents());
        drop(start(&jf, &home, &mut mem, &opts()).unwrap());
        let mut bytes = jf.contents();
        let mut rec = Vec::new();
        craft_record(&mut rec, epoch, seq, 0, DATA.start, &[0xab; 8]);
        let at = RECORDS_OFFSET as usize;
        if bytes.len() < at + rec.len() {
            bytes.resize(at + rec.len(), 0);
        }
        bytes[at..at + rec.len()].copy_from_slice(&rec);
        let s = scan(&bytes, &UUID, DATA).unwrap();
        assert!(s.records.is_empty(), "epoch {epoch} seq {seq}: {s:?}");
        // The same record with both right is replayed.
        if epoch == 2 {
            let mut ok = Vec::new();
            craft_record(&mut ok, 1, 1, 0, DATA.start, &[0xab; 8]);
            bytes[at..at + ok.len()].copy_from_slice(&ok);
            assert_eq!(scan(&bytes, &UUID, DATA).unwrap().records.len(), 1);
        }
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn replay_writes_contiguous_pages_in_one_run() {
    // Records changing pages 2, 3 and 4 (one record spanning 3 and 4) and page 9: two runs, so
    // two writes to the home file.
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    for (off, len) in [(2 * 4096 + 64, 8u64), (3 * 4096 + 4000, 200), (9 * 4096, 8)] {
        mem.bytes_mut()[off as usize..(off + len) as usize].fill(0x77);
        j.flush(off, len);
        j.order().unwrap();
    }
    let expect = mem.bytes();
    write_unsynced(&j);
    drop(j);
    let counted = CountingFile::new(&home);
    let (_, _, report) = replay(&jf, &counted, &UUID, DATA).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(counted.writes(), 2, "one write per run of pages");
    assert_eq!(home.contents(), expect);
}

#[test]
#[cfg_attr(miri, ignore = "an 8 MiB record: too slow under Miri")]
fn replay_splits_runs_of_8_mib_and_writes_each_in_place() {
    // One record of 2049 pages: replay writes a first run of 8 MiB (2048 pages) and then the
    // last page, each at its own offset.
    const PAGES: u64 = 2049;
    let data = 4096..4096 + PAGES * 4096 + 4096;
    let home = SimFile::with_contents(vec![0u8; data.end as usize + 4096]);
    let payload: Vec<u8> = (0..PAGES * 4096).map(|i| (i / 4096 + i % 251) as u8).collect();
    let mut bytes = vec![0u8; RECORDS_OFFSET as usize];
    let h = format::JournalHeader {
        pool_uuid: UUID,
        epoch: 1,
        start_seq: 1,
    };
    bytes[..format::SLOT_SIZE].copy_from_slice(&h.encode());
    craft_record(&mut bytes, 1, 1, 0, data.start + 4096, &payload);
    let s = scan(&bytes, &UUID, data.clone()).unwrap();
    assert_eq!(s.records.len(), 1);
    let counted = CountingFile::new(&home);
    apply(&bytes, &s, &counted, data.clone()).unwrap();
    assert_eq!(counted.writes(), 2, "a run of 8 MiB, then one page");
    let got = home.contents();
    let at = (data.start + 4096) as usize;
    assert!(
        got[..at].iter().all(|&b| b == 0),
        "bytes before the record's range changed"
    );
    assert!(
        got[at..at + payload.len()] == payload[..],
        "the record's bytes are not in place"
    );
    assert!(
        got[at + payload.len()..].iter().all(|&b| b == 0),
        "bytes after the record's range changed"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn the_journal_file_grows_in_zero_filled_steps() {
    // Appends land in zero-filled space allocated ahead in steps of 4 MiB (a quarter of the
    // bound when that is smaller, at least a page): the file grows past the end of the first
    // record to the step after next.
    for (bound, len) in [
        (DEFAULT_MAX_BYTES, 8u64 << 20),
        (TEST_BOUND, 128 << 10),
        (64 << 10, 32 << 10),
    ] {
        let (jf, home) = fresh_files();
        let mut mem = Mem::new(&home.contents());
        let j = start(&jf, &home, &mut mem, &JournalOptions::new().max_bytes(bound)).unwrap();
        mem.bytes_mut()[8192] = 1;
        j.flush(8192, 8);
        j.drain().unwrap();
        assert_eq!(jf.contents().len() as u64, len, "bound {bound}");
        drop(j);
    }
    // A record ending exactly where the zeros end grows nothing: with a 64 KiB bound (steps of
    // 16 KiB) the first record (120 bytes at 4096) grew the file to 32 KiB, and a second one of
    // 28,552 bytes (two ranges, 445 lines) ends there.
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &JournalOptions::new().max_bytes(64 << 10)).unwrap();
    j.flush(8192, 8);
    j.drain().unwrap();
    assert_eq!(jf.contents().len(), 32 << 10);
    j.flush(8192, 400 * 64);
    j.flush(40960, 45 * 64);
    j.drain().unwrap();
    assert_eq!(j.stats().live_bytes, (32 << 10) - RECORDS_OFFSET);
    assert_eq!(jf.contents().len(), 32 << 10);
    drop(j);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_flush_journals_the_whole_lines_it_touches_and_only_those() {
    // Inside one line, straddling two lines, and ending on a line boundary: each record holds
    // exactly the lines, as a CPU cache would write them back.
    for (off, len, lines) in [
        (8200u64, 8u64, 8192..8256u64),
        (8250, 10, 8192..8320),
        (8256, 64, 8256..8320),
    ] {
        let (jf, home) = fresh_files();
        let mut mem = Mem::new(&home.contents());
        let j = start(&jf, &home, &mut mem, &opts()).unwrap();
        for (i, b) in mem.bytes_mut()[8000..8500].iter_mut().enumerate() {
            *b = i as u8 | 1;
        }
        j.flush(off, len);
        j.drain().unwrap();
        drop(j);
        let bytes = jf.contents();
        let s = scan(&bytes, &UUID, DATA).unwrap();
        assert_eq!(s.records.len(), 1);
        let (at, rlen) = s.records[0];
        let rec = &bytes[at as usize..(at + rlen) as usize];
        let h = format::RecordHeader::decode(rec).unwrap();
        let ranges = format::parse_ranges(&rec[RECORD_HEADER..], h.n_ranges, DATA.start, DATA.end).unwrap();
        assert_eq!(ranges.len(), 1, "flush({off}, {len})");
        assert_eq!(
            ranges[0].offset..ranges[0].offset + ranges[0].bytes.len() as u64,
            lines,
            "flush({off}, {len})"
        );
        assert_eq!(
            ranges[0].bytes,
            &mem.bytes()[lines.start as usize..lines.end as usize]
        );
    }
}

/// The ranges of the single record in `jf`, as `(pool range, bytes)`.
fn only_record_ranges(jf: &SimFile) -> Vec<(std::ops::Range<u64>, Vec<u8>)> {
    let bytes = jf.contents();
    let s = scan(&bytes, &UUID, DATA).unwrap();
    assert_eq!(s.records.len(), 1);
    let (at, len) = s.records[0];
    let rec = &bytes[at as usize..(at + len) as usize];
    let h = format::RecordHeader::decode(rec).unwrap();
    format::parse_ranges(&rec[RECORD_HEADER..], h.n_ranges, DATA.start, DATA.end)
        .unwrap()
        .into_iter()
        .map(|r| (r.offset..r.offset + r.bytes.len() as u64, r.bytes.to_vec()))
        .collect()
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn an_ordering_point_coalesces_overlapping_and_adjacent_ranges_into_one_record() {
    // Flushed out of order: a disjoint line, two adjacent lines, a range overlapping the second
    // and reaching further, one inside the first, one sharing a start with another, and a long
    // one that a later, shorter one lies inside: one record of three ranges, each holding the
    // memory's bytes.
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    for (i, b) in mem.bytes_mut()[8192..20480].iter_mut().enumerate() {
        *b = (i % 253) as u8 + 1;
    }
    for (off, len) in [
        (12288u64, 8u64),
        (8256, 64),
        (8192, 64),
        (8300, 100),
        (8200, 8),
        (12288, 200),
        (16384, 512),
        (16448, 8),
    ] {
        j.flush(off, len);
    }
    j.drain().unwrap();
    let m = mem.bytes();
    drop(j);
    let got = only_record_ranges(&jf);
    let expect: Vec<_> = [8192..8448u64, 12288..12544, 16384..16896]
        .into_iter()
        .map(|r| (r.clone(), m[r.start as usize..r.end as usize].to_vec()))
        .collect();
    assert_eq!(got, expect);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_durability_point_with_nothing_new_joins_the_group_only_while_its_record_is_not_durable() {
    const SMALL: u64 = 16 << 10;
    let jf = SimFile::new();
    let home = SimFile::with_contents(vec![0u8; SMALL as usize]);
    let mut mem = vec![0u64; SMALL as usize / 8];
    // SAFETY: `mem` outlives the journal (dropped after it) and is SMALL bytes.
    let j = unsafe {
        start_over(
            &jf,
            &home,
            "group.journal",
            mem.as_mut_ptr().cast(),
            SMALL,
            &JournalOptions::new(),
        )
    };
    j.flush(4096, 8);
    assert_eq!(j.order().unwrap(), 1);
    assert_eq!(
        j.arrivals.load(Ordering::Acquire),
        0,
        "an ordering point is no durability point"
    );
    assert_eq!(j.append(true).unwrap(), 1, "nothing new: the last record");
    assert_eq!(
        j.arrivals.load(Ordering::Acquire),
        1,
        "record 1 is not durable: it waits for the next sync"
    );
    j.sync_to(1).unwrap();
    assert_eq!(j.arrivals.load(Ordering::Acquire), 0, "the sync took the group");
    assert_eq!(j.append(true).unwrap(), 1);
    assert_eq!(
        j.arrivals.load(Ordering::Acquire),
        0,
        "record 1 is durable: nothing to wait for"
    );
    drop(j);
    // A buffered durability point only appends: it waits for no sync, so it joins no group.
    let jf = SimFile::new();
    // SAFETY: as above.
    let j = unsafe {
        start_over(
            &jf,
            &home,
            "group.journal",
            mem.as_mut_ptr().cast(),
            SMALL,
            &JournalOptions::new().buffered(std::time::Duration::from_secs(3600)),
        )
    };
    j.flush(4096, 8);
    j.drain().unwrap();
    assert_eq!(j.arrivals.load(Ordering::Acquire), 0);
    assert_eq!(j.stats().durable_seq, 0, "a buffered drain does not sync");
    drop(j);
    drop(mem);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn stats_count_records_bytes_syncs_and_checkpoints() {
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    for i in 0..3u64 {
        mem.bytes_mut()[8192 + i as usize * 64] = 1;
        j.flush(8192 + i * 64, 8);
        j.order().unwrap();
    }
    j.flush(12288, 200);
    j.drain().unwrap();
    let st = j.stats();
    // Three records of one line, one of four lines: a 40-byte header and a 16-byte range header
    // each.
    let bytes = 3 * (40 + 16 + 64) + (40 + 16 + 256);
    assert_eq!(
        (
            st.records,
            st.bytes,
            st.syncs,
            st.live_bytes,
            st.durable_seq,
            st.checkpoints,
            st.epoch
        ),
        (4, bytes, 1, bytes, 4, 0, 1)
    );
    j.checkpoint().unwrap();
    let st = j.stats();
    assert_eq!(
        (st.checkpoints, st.epoch, st.live_bytes, st.durable_seq),
        (1, 2, 0, 4)
    );
    drop(j);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_leader_waits_for_its_group_only_while_it_is_short_and_then_shrinks_it() {
    const SMALL: u64 = 16 << 10;
    let jf = SimFile::new();
    let home = SimFile::with_contents(vec![0u8; SMALL as usize]);
    let mut mem = vec![0u64; SMALL as usize / 8];
    // SAFETY: `mem` outlives the journal (dropped after it) and is SMALL bytes.
    let j = unsafe {
        start_over(
            &jf,
            &home,
            "gather.journal",
            mem.as_mut_ptr().cast(),
            SMALL,
            &JournalOptions::new(),
        )
    };
    // The last sync took no time: a short group gets no wait at all, and shrinks to the points
    // that came (at least 1).
    j.last_sync_ns.store(0, Ordering::Relaxed);
    for (group, came, after) in [(3u32, 1u32, 1u32), (3, 0, 1), (3, 3, 3), (4, 5, 4), (1, 0, 1)] {
        j.group.store(group, Ordering::Relaxed);
        j.arrivals.store(came, Ordering::Relaxed);
        j.gather();
        assert_eq!(
            j.group.load(Ordering::Relaxed),
            after,
            "group {group}, {came} came"
        );
    }
    drop(j);
    drop(mem);
}

#[test]
#[cfg_attr(miri, ignore = "a 17 MiB record: too slow under Miri")]
fn a_huge_record_is_written_out_at_once_and_its_scratch_buffer_freed() {
    // Records past WRITE_OUT_AT are written (unsynced) by the ordering point, and the appender
    // drops a scratch buffer that large instead of keeping it for ever; a small record's is kept.
    const BIG: u64 = 20 << 20;
    let jf = SimFile::new();
    let home = SimFile::with_contents(vec![0u8; BIG as usize]);
    let mut mem = vec![0x0101_0101_0101_0101u64; BIG as usize / 8];
    // SAFETY: `mem` outlives the journal (dropped after it) and is BIG bytes.
    let j = unsafe {
        start_over(
            &jf,
            &home,
            "huge.journal",
            mem.as_mut_ptr().cast(),
            BIG,
            &JournalOptions::new(),
        )
    };
    j.flush(4096, 64);
    j.order().unwrap();
    assert!(
        lock(&j.appender).record.capacity() > 0,
        "a small record's buffer is kept"
    );
    assert_eq!(jf.unsynced_writes(), 0, "a small record stays buffered");
    j.flush(4096, WRITE_OUT_AT as u64 + 4096);
    j.order().unwrap();
    assert_eq!(
        lock(&j.appender).record.capacity(),
        0,
        "a huge record's buffer is dropped"
    );
    assert!(jf.unsynced_writes() > 0, "a huge record is written out at once");
    assert!(lock(&j.outbox).buf.is_empty());
    drop(j);
    drop(mem);
}

#[test]
#[cfg_attr(miri, ignore = "a 9 MiB memory: too slow under Miri")]
fn a_checkpoint_writes_dirty_pages_home_in_runs_of_at_most_8_mib() {
    // Dirty pages 2-4, 9, 63-64 (across two words of the bitmap), 100 and 300-2348 (2049
    // pages): the checkpoint writes exactly those pages home, one write per run, the last run
    // cut after 2048 pages.
    const PAGES: u64 = 2400;
    const LEN: u64 = PAGES * 4096;
    let jf = SimFile::new();
    let home = SimFile::with_contents(vec![0u8; LEN as usize]);
    let counted = CountingFile::new(&home);
    let mut mem = vec![0u64; LEN as usize / 8];
    let base: *mut u8 = mem.as_mut_ptr().cast();
    // SAFETY: `mem` outlives the journal (dropped after it) and is LEN bytes.
    let j = unsafe { start_over(&jf, &counted, "runs.journal", base, LEN, &JournalOptions::new()) };
    let runs = [(2u64, 3u64), (9, 1), (63, 2), (100, 1), (300, 2049)];
    for (first, n) in runs {
        for page in first..first + n {
            // SAFETY: `page < PAGES`: inside `mem`.
            unsafe { base.add(page as usize * 4096 + 8).write(page as u8 | 1) };
        }
        j.flush(first * 4096, n * 4096);
        j.drain().unwrap();
    }
    let before = counted.writes();
    j.checkpoint().unwrap();
    assert_eq!(
        counted.writes() - before,
        6,
        "one write per run, the long run cut in two"
    );
    drop(j);
    let got = home.contents();
    // SAFETY: `mem` is LEN initialized bytes, no longer written.
    let expect = unsafe { std::slice::from_raw_parts(base, LEN as usize) };
    assert!(
        got == expect,
        "the home file does not hold the memory after the checkpoint"
    );
    drop(mem);
}

#[test]
fn a_journal_file_is_empty_by_its_length() {
    assert!(SimFile::new().is_empty().unwrap());
    assert!(!SimFile::with_contents(vec![0]).is_empty().unwrap());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "simulated files of 64 KiB and more are too slow under Miri: see small_memory_for_miri"
)]
fn a_new_epoch_writes_the_other_header_slot() {
    // Epoch 1 (the start) in slot 1, epoch 2 (a checkpoint) in slot 0: a torn header write
    // leaves the previous epoch's header whole in the other slot.
    let (jf, home) = fresh_files();
    let mut mem = Mem::new(&home.contents());
    let j = start(&jf, &home, &mut mem, &opts()).unwrap();
    j.checkpoint().unwrap();
    drop(j);
    let bytes = jf.contents();
    let slot = |i: usize| {
        let at = format::SLOT_OFFSETS[i] as usize;
        format::JournalHeader::decode(bytes[at..at + format::SLOT_SIZE].try_into().unwrap())
    };
    assert_eq!(slot(1).unwrap().epoch, 1);
    assert_eq!(slot(0).unwrap().epoch, 2);
}
