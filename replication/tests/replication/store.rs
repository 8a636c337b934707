//! The ptm-backed log store and state machine beyond openraft's suite: state and log survive a
//! reopen, a damaged record or a foreign pool refuses to open with a named error, a full pool
//! reaches openraft as a `StorageError` and leaves the log whole, and the log matches a
//! `BTreeMap` model under random appends, truncations and purges (proptest).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, membership_ent};
use openraft::{Entry, EntryPayload, RaftLogReader, RaftSnapshotBuilder, Vote};
use proptest::prelude::*;
use ptm::{PCell, Persistent, Pool, PoolOptions};
use ptm_raft::kv::{KvApp, KvConfig, KvRequest};
use ptm_raft::{Error, RaftStore};

fn put(term: u64, index: u64, key: &str, value: &str) -> Entry<KvConfig> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(KvRequest::Put {
            key: key.into(),
            value: value.into(),
        }),
    }
}

fn opts() -> PoolOptions {
    PoolOptions::new().force_pmem(true)
}

fn shm_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

fn kv_entries(store: &RaftStore<KvApp>) -> Vec<(String, String)> {
    rt().block_on(store.read(|tx, state| state.entries(tx)))
        .expect("read state")
}

#[test]
fn log_vote_and_state_survive_reopen() {
    let dir = shm_dir();
    let path = dir.path().join("n.pool");
    let rt = rt();
    {
        let store = RaftStore::create(&path, 16 << 20, &opts(), KvApp).unwrap();
        let (mut log, mut sm) = (store.log_store(), store.state_machine());
        rt.block_on(async {
            log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
            let entries = vec![
                membership_ent::<KvConfig>(1, 1, 1, vec![[1, 2, 3].into()]),
                put(1, 2, "a", "1"),
                put(2, 3, "b", "2"),
                put(3, 4, "a", "3"),
            ];
            log.blocking_append(entries.clone()).await.unwrap();
            let responses = sm.apply(entries[..3].to_vec()).await.unwrap();
            assert_eq!(responses[1].previous, None);
            log.save_committed(Some(log_id(2, 1, 3))).await.unwrap();
        });
    }
    let store = RaftStore::open(&path, &opts(), KvApp).unwrap();
    let (mut log, mut sm) = (store.log_store(), store.state_machine());
    rt.block_on(async {
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(3, 1)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 1, 3)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3, 1, 4)));
        assert_eq!(state.last_purged_log_id, None);
        let entries = log.try_get_log_entries(1..5).await.unwrap();
        assert_eq!(
            entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(2, 1, 3)), "applied up to 3, not 4");
        assert_eq!(membership.log_id(), &Some(log_id(1, 1, 1)));
        // Entry 4 was not applied before the restart: applying it now sees the old value once.
        let r = sm.apply(vec![put(3, 4, "a", "3")]).await.unwrap();
        assert_eq!(r[0].previous.as_deref(), Some("1"));
    });
    assert_eq!(
        kv_entries(&store),
        [("a".into(), "3".into()), ("b".into(), "2".into())]
    );
}

#[test]
fn snapshot_moves_state_to_another_store() {
    let (d1, d2) = (shm_dir(), shm_dir());
    let a = RaftStore::create(d1.path().join("a.pool"), 16 << 20, &opts(), KvApp).unwrap();
    let b = RaftStore::create(d2.path().join("b.pool"), 16 << 20, &opts(), KvApp).unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut sm = a.state_machine();
        sm.apply((1..=200).map(|i| put(1, i, &format!("k{i}"), &format!("v{i}"))))
            .await
            .unwrap();
        let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 200)));
        let mut sb = b.state_machine();
        // b holds a key the snapshot does not: installing replaces the whole state.
        sb.apply([put(1, 1, "stale", "x")]).await.unwrap();
        sb.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        assert_eq!(sb.applied_state().await.unwrap().0, Some(log_id(1, 1, 200)));
        let cur = sb
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("current snapshot");
        assert_eq!(cur.meta, snap.meta);
    });
    assert_eq!(kv_entries(&a), kv_entries(&b));
    assert_eq!(kv_entries(&b).len(), 200);
    assert_eq!(b.snapshots_installed(), 1);
}

#[test]
fn a_bad_snapshot_is_refused_and_changes_nothing() {
    let dir = shm_dir();
    let store = RaftStore::create(dir.path().join("a.pool"), 16 << 20, &opts(), KvApp).unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut sm = store.state_machine();
        sm.apply([put(1, 1, "a", "1")]).await.unwrap();
        let mut snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        snap.meta.last_log_id = Some(log_id(2, 1, 9));
        let garbage = Box::new(std::io::Cursor::new(b"{not json".to_vec()));
        let err = sm.install_snapshot(&snap.meta, garbage).await.unwrap_err();
        assert!(err.to_string().contains("snapshot data"), "{err}");
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 1)));
    });
    assert_eq!(kv_entries(&store), [("a".into(), "1".into())]);
}

fn flip_byte(path: &Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x20]).unwrap();
}

#[test]
fn a_damaged_record_refuses_to_open() {
    let dir = shm_dir();
    let path = dir.path().join("n.pool");
    let store = RaftStore::create(&path, 16 << 20, &opts(), KvApp).unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut log = store.log_store();
        log.save_vote(&Vote::new(7, 2)).await.unwrap();
        log.save_committed(Some(log_id(7, 2, 1))).await.unwrap();
        log.blocking_append([put(7, 1, "a", "1")]).await.unwrap();
        store.state_machine().apply([put(7, 1, "a", "1")]).await.unwrap();
    });
    let offsets: BTreeMap<_, _> = store.record_offsets().unwrap().into_iter().collect();
    drop(store);
    for (name, what) in [
        ("vote", "vote"),
        ("committed", "committed log id"),
        ("applied", "applied log id"),
    ] {
        // A byte inside the record (past its 4-byte checksum): the checksum catches it.
        let off = offsets[name] + 6;
        flip_byte(&path, off);
        match RaftStore::open(&path, &opts(), KvApp) {
            Err(Error::Corrupt { what: w, .. }) => assert_eq!(w, what),
            other => panic!("{name} damaged: {other:?}"),
        }
        flip_byte(&path, off);
        RaftStore::open(&path, &opts(), KvApp).expect("repaired byte: opens again");
    }
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Foreign {
    words: [PCell<u64>; 32],
}

/// Zeroes the pool's recorded schema fingerprint, as in a pool written before schemas.
fn forget_schema(path: &Path) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(5120)).unwrap();
    f.write_all(&[0; 8]).unwrap();
}

#[test]
fn a_foreign_pool_is_refused() {
    assert_eq!(size_of::<Foreign>(), 256);
    let dir = shm_dir();
    let path = dir.path().join("f.pool");
    let pool = Pool::<Foreign>::create(&path, 16 << 20, &opts()).unwrap();
    // Word 1 is where a raft pool keeps its magic (after the log lock's word).
    pool.transaction(|tx, r| r.words[1].set(tx, 0xdead_beef)).unwrap();
    drop(pool);
    // ptm records the root's schema: another root type is refused before the store looks.
    match RaftStore::open(&path, &opts(), KvApp) {
        Err(Error::Pool(ptm::Error::SchemaMismatch { .. })) => {}
        other => panic!("{other:?}"),
    }
    // A pool that records no schema (written before ptm recorded them: fingerprint word at
    // pool offset 5120 zero, design §8.1) is checked by the store's own magic and version.
    forget_schema(&path);
    match RaftStore::open(&path, &opts(), KvApp) {
        Err(Error::NotRaftPool { found, .. }) => assert_eq!(found, 0xdead_beef),
        other => panic!("{other:?}"),
    }
    forget_schema(&path);
    let pool = Pool::<Foreign>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.words[1].set(tx, ptm_raft::store::MAGIC)?;
        r.words[2].set(tx, 99)
    })
    .unwrap();
    drop(pool);
    forget_schema(&path);
    match RaftStore::open(&path, &opts(), KvApp) {
        Err(Error::UnsupportedVersion { found: 99, .. }) => {}
        other => panic!("{other:?}"),
    }
    // A root of another size is ptm's own named error: the schema when one is recorded, the
    // root size when none is.
    let dir2 = shm_dir();
    let path2 = dir2.path().join("g.pool");
    drop(Pool::<PCell<u64>>::create(&path2, 16 << 20, &opts()).unwrap());
    assert!(matches!(
        RaftStore::open(&path2, &opts(), KvApp),
        Err(Error::Pool(ptm::Error::SchemaMismatch { .. }))
    ));
    forget_schema(&path2);
    assert!(matches!(
        RaftStore::open(&path2, &opts(), KvApp),
        Err(Error::Pool(ptm::Error::RootMismatch { .. }))
    ));
}

#[test]
fn a_full_pool_is_a_storage_error_and_the_log_stays_whole() {
    let dir = shm_dir();
    let path = dir.path().join("small.pool");
    let store = RaftStore::create(&path, 16 << 20, &opts(), KvApp).unwrap();
    let big = "x".repeat(256 << 10);
    let rt = rt();
    let appended = rt.block_on(async {
        let mut log = store.log_store();
        let mut index = 1;
        loop {
            assert!(index < 1000, "a 16 MiB pool took 1000 entries of 256 KiB");
            match log
                .blocking_append([put(1, index, "k", &big), put(1, index + 1, "k", &big)])
                .await
            {
                Ok(()) => index += 2,
                Err(e) => {
                    assert!(e.to_string().contains("out of pool space"), "{e}");
                    break index - 1;
                }
            }
        }
    });
    assert!(appended >= 2, "nothing fitted");
    rt.block_on(async {
        let mut log = store.log_store();
        // The failed batch left nothing behind.
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 1, appended))
        );
        // Purging makes room again.
        log.purge(log_id(1, 1, appended)).await.unwrap();
        log.blocking_append([put(1, appended + 1, "k", &big)])
            .await
            .unwrap();
    });
    drop(store);
    RaftStore::open(&path, &opts(), KvApp).expect("reopens after the failure");
}

#[derive(Debug, Clone)]
enum LogOp {
    Append(u8),
    Truncate(u8),
    Purge(u8),
}

fn log_op() -> impl Strategy<Value = LogOp> {
    prop_oneof![
        3 => (1u8..6).prop_map(LogOp::Append),
        1 => any::<u8>().prop_map(LogOp::Truncate),
        1 => any::<u8>().prop_map(LogOp::Purge),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Appends (contiguous batches), truncations and purges against a `BTreeMap` model, in
    /// the order openraft issues them; after each operation and after a reopen the log reads
    /// the same as the model.
    #[test]
    fn log_matches_a_btreemap_model(ops in proptest::collection::vec(log_op(), 1..25)) {
        let dir = shm_dir();
        let path = dir.path().join("m.pool");
        let store = RaftStore::create(&path, 16 << 20, &opts(), KvApp).unwrap();
        let rt = rt();
        let mut model: BTreeMap<u64, Entry<KvConfig>> = BTreeMap::new();
        let mut purged: Option<u64> = None;
        let mut next = 1u64;
        let mut term = 1u64;
        let check = |store: &RaftStore<KvApp>, model: &BTreeMap<u64, Entry<KvConfig>>, purged: Option<u64>| {
            rt.block_on(async {
                let mut log = store.log_store();
                let got = log.try_get_log_entries(..).await.unwrap();
                let want: Vec<_> = model.values().cloned().collect();
                assert_eq!(got, want);
                let state = log.get_log_state().await.unwrap();
                assert_eq!(state.last_purged_log_id.map(|l| l.index), purged);
                let last = model.values().last().map(|e| e.log_id).or(state.last_purged_log_id);
                assert_eq!(state.last_log_id, last);
            })
        };
        for op in ops {
            rt.block_on(async {
                let mut log = store.log_store();
                match op {
                    LogOp::Append(n) => {
                        let batch: Vec<_> = (next..next + n as u64)
                            .map(|i| put(term, i, &format!("k{i}"), "v"))
                            .collect();
                        log.blocking_append(batch.clone()).await.unwrap();
                        for e in batch {
                            model.insert(e.log_id.index, e);
                        }
                        next += n as u64;
                    }
                    LogOp::Truncate(at) => {
                        // openraft truncates only past the purged point.
                        let lo = purged.map_or(1, |p| p + 1);
                        if next > lo {
                            let since = lo + at as u64 % (next - lo);
                            log.truncate(log_id(term, 1, since)).await.unwrap();
                            model.retain(|&i, _| i < since);
                            next = since;
                            term += 1;
                        }
                    }
                    LogOp::Purge(at) => {
                        if let Some(&last) = model.keys().last() {
                            let lo = purged.map_or(1, |p| p + 1);
                            let upto = lo + at as u64 % (last - lo + 1);
                            let id = model[&upto].log_id;
                            log.purge(id).await.unwrap();
                            model.retain(|&i, _| i > upto);
                            purged = Some(upto);
                        }
                    }
                }
            });
            check(&store, &model, purged);
        }
        drop(store);
        let store = RaftStore::open(&path, &opts(), KvApp).unwrap();
        check(&store, &model, purged);
    }
}

/// openraft queues a follower's snapshot install and, without waiting for it, purges the log
/// the snapshot covers. A crash between the two must not leave entries purged that neither the
/// snapshot nor the state holds (openraft refuses to start then: found by the cluster test).
#[test]
fn a_purge_ahead_of_an_incoming_snapshot_waits_for_its_install() {
    let (dl, df) = (shm_dir(), shm_dir());
    let leader = RaftStore::create(dl.path().join("l.pool"), 16 << 20, &opts(), KvApp).unwrap();
    let path = df.path().join("f.pool");
    let follower = RaftStore::create(&path, 16 << 20, &opts(), KvApp).unwrap();
    let rt = rt();
    let entries: Vec<_> = (1..=30).map(|i| put(1, i, &format!("k{i}"), "v")).collect();
    let snap = rt.block_on(async {
        let mut sm = leader.state_machine();
        sm.apply(entries[..25].to_vec()).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap()
    });
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 25)));
    rt.block_on(async {
        let (mut log, mut sm) = (follower.log_store(), follower.state_machine());
        log.blocking_append(entries[..12].to_vec()).await.unwrap();
        sm.apply(entries[..10].to_vec()).await.unwrap();
        let own = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(own.meta.last_log_id, Some(log_id(1, 1, 10)));
        // The incoming snapshot: receiving begins, openraft purges up to 25 at once.
        sm.begin_receiving_snapshot().await.unwrap();
        log.purge(log_id(1, 1, 25)).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(
            state.last_purged_log_id,
            Some(log_id(1, 1, 10)),
            "purged only what a snapshot holds"
        );
    });
    // Crash before the install: the pool opens and is consistent.
    drop(follower);
    let follower = RaftStore::open(&path, &opts(), KvApp).expect("opens after a crash before the install");
    rt.block_on(async {
        let (mut log, mut sm) = (follower.log_store(), follower.state_machine());
        assert_eq!(log.try_get_log_entries(11..13).await.unwrap().len(), 2);
        sm.begin_receiving_snapshot().await.unwrap();
        log.purge(log_id(1, 1, 25)).await.unwrap();
        sm.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        // The install purged the rest in its own transaction.
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 25)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 25)));
        // Not receiving any more: a purge covered by a new snapshot goes through at once.
        log.blocking_append(entries[25..].to_vec()).await.unwrap();
        sm.apply(entries[25..28].to_vec()).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        log.purge(log_id(1, 1, 27)).await.unwrap();
        assert_eq!(
            log.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id(1, 1, 27))
        );
    });
    drop(follower);
    let follower = RaftStore::open(&path, &opts(), KvApp).unwrap();
    assert_eq!(kv_entries(&follower).len(), 28);
}

#[test]
fn a_purge_past_the_snapshot_refuses_to_open() {
    let dir = shm_dir();
    let path = dir.path().join("n.pool");
    let store = RaftStore::create(&path, 16 << 20, &opts(), KvApp).unwrap();
    let rt = rt();
    rt.block_on(async {
        let (mut log, mut sm) = (store.log_store(), store.state_machine());
        let entries: Vec<_> = (1..=8).map(|i| put(1, i, "k", "v")).collect();
        log.blocking_append(entries.clone()).await.unwrap();
        sm.apply(entries[..4].to_vec()).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        // Not receiving a snapshot: a purge past it is done as asked (openraft never asks for
        // one), and the pool is then one openraft could not restart from.
        log.purge(log_id(1, 1, 6)).await.unwrap();
    });
    drop(store);
    match RaftStore::open(&path, &opts(), KvApp) {
        Err(Error::Corrupt {
            what: "log shape",
            detail,
        }) => assert!(detail.contains("snapshot"), "{detail}"),
        other => panic!("{other:?}"),
    }
}
