//! openraft's storage traits on one ptm pool: [`LogStore`] (`RaftLogStorage`, `RaftLogReader`)
//! and [`StateMachine`] (`RaftStateMachine`, `RaftSnapshotBuilder`), both handles of one
//! [`RaftStore`].
//!
//! Every operation openraft asks for is one ptm transaction, run on tokio's blocking pool so that
//! a durability point (an `fdatasync` on the journaled disk engine) never stalls the runtime.
//! The log and the state machine sit under two [`PMutex`]es of the root (which makes the pool
//! `Sync`); the store admits one transaction at a time (see `run` for why), so the appends,
//! applies and reads of one node do not overlap and do not share an `fdatasync`.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, RaftTypeConfig, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use ptm::{PCell, PMutex, Persistent, Pool, PoolOptions, Transaction};
use ptm_collections::{PBTreeMap, PVec};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// First word of a ptm-raft pool's root (`"ptmraft1"` little-endian).
pub const MAGIC: u64 = u64::from_le_bytes(*b"ptmraft1");
/// The format of the root and its records (docs/design.md §14). Pools of another version are
/// refused with [`Error::UnsupportedVersion`].
pub const FORMAT_VERSION: u64 = 1;

/// What an application plugs into the replicated store: its openraft type configuration, the
/// persistent state its log entries change, and how to change, dump and load that state.
///
/// The state is the application's own persistent structure (any [`Persistent`] type, typically a
/// struct of ptm-collections handles: all-zero bytes must be the empty state). `apply` runs
/// inside the ptm transaction that also advances the applied log id, so a restarted node neither
/// re-applies nor skips an entry.
pub trait Application: Send + Sync + 'static {
    /// The openraft type configuration: node ids are `u64`, nodes [`BasicNode`]s (an address),
    /// entries openraft's [`Entry`], snapshots byte buffers.
    type Config: RaftTypeConfig<
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<Self::Config>,
        SnapshotData = Cursor<Vec<u8>>,
    >;
    /// The replicated state, stored in the pool's root (its size a multiple of 8 bytes).
    type State: Persistent + Send;

    /// Applies one request to the state, inside the transaction that applies its log entry.
    ///
    /// # Errors
    ///
    /// Only storage failures ([`Error::Pool`]: out of space, I/O): the whole batch of entries
    /// then rolls back and openraft stops the node (a [`StorageError`]). An application-level
    /// refusal (a missing key, ...) belongs in the response, not here.
    fn apply(
        &self,
        tx: &Transaction<'_>,
        state: &Self::State,
        log_id: &LogId<u64>,
        request: &AppRequest<Self>,
    ) -> Result<AppResponse<Self>>;

    /// The response for an entry that carries no request (a leader's blank entry, a
    /// membership change).
    fn empty_response(&self) -> AppResponse<Self>;

    /// Serializes the whole state: a consistent read (the state machine is locked for the
    /// transaction).
    ///
    /// # Errors
    ///
    /// Read errors of a corrupted state.
    fn snapshot(&self, tx: &Transaction<'_>, state: &Self::State) -> Result<Vec<u8>>;

    /// Replaces the whole state with the one `data` (from [`snapshot`](Application::snapshot)
    /// on another node) describes, inside the transaction that installs the snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when `data` does not decode; storage failures. The transaction then
    /// rolls back: the state is unchanged.
    fn restore(&self, tx: &Transaction<'_>, state: &Self::State, data: &[u8]) -> Result<()>;
}

/// The request type of an application (`D` of its openraft configuration).
pub type AppRequest<A> = <<A as Application>::Config as RaftTypeConfig>::D;
/// The response type of an application (`R` of its openraft configuration).
pub type AppResponse<A> = <<A as Application>::Config as RaftTypeConfig>::R;
type Conf<A> = <A as Application>::Config;

/// The root of a ptm-raft pool: the log under one lock, the state machine under another
/// (byte offsets in docs/design.md §14).
#[repr(C)]
pub struct RaftRoot<S> {
    log: PMutex<LogArea>,
    machine: PMutex<MachineArea<S>>,
}

impl<S> Debug for RaftRoot<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftRoot { .. }")
    }
}

/// The log: vote, committed and purged log ids as records, entries by index.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct LogArea {
    magic: PCell<u64>,
    version: PCell<u64>,
    /// Index of the first entry present.
    first: PCell<u64>,
    /// One past the last entry present; `first == end`: no entry.
    end: PCell<u64>,
    vote: PVec<u8>,
    committed: PVec<u8>,
    purged: PVec<u8>,
    entries: PBTreeMap<u64, PVec<u8>>,
}

/// The state machine: applied log id, membership, the last snapshot, the application's state.
#[repr(C)]
struct MachineArea<S> {
    applied: PVec<u8>,
    membership: PVec<u8>,
    snapshot_meta: PVec<u8>,
    snapshot_data: PVec<u8>,
    snapshot_seq: PCell<u64>,
    state: S,
}

// The byte offsets of docs/design.md §14 (root offsets: the log area starts at 8, after its
// lock word; the machine area at 136).
const _: () = assert!(size_of::<LogArea>() == 120);
const _: () = assert!(std::mem::offset_of!(LogArea, vote) == 32);
const _: () = assert!(std::mem::offset_of!(LogArea, entries) == 104);
const _: () = assert!(std::mem::offset_of!(MachineArea<u64>, snapshot_seq) == 96);
const _: () = assert!(std::mem::offset_of!(MachineArea<u64>, state) == 104);
const _: () = assert!(size_of::<PMutex<LogArea>>() == 128);

// SAFETY: `repr(C)` of four `PVec<u8>` handles, a `PCell<u64>` and an `S`, all `Persistent`
// (any bit pattern valid, no pointer); the handles and the cell are 8-byte fields (104 bytes),
// and the layout check below asserts that `S` adds exactly its own size (no padding before or
// after it), wherever the type is used as pool data.
unsafe impl<S: Persistent + 'static> Persistent for MachineArea<S> {
    const __LAYOUT_CHECK: () = {
        let () = S::__LAYOUT_CHECK;
        assert!(
            size_of::<MachineArea<S>>() == 104 + size_of::<S>(),
            "the application state must be a multiple of 8 bytes, 8-byte aligned at most"
        );
    };
}

// SAFETY: `repr(C)` of two `PMutex`es of `Persistent` types; `PMutex<LogArea>` is 128 bytes
// (asserted above), so the second field starts 8-aligned with no padding, and the check below
// asserts no trailing padding.
unsafe impl<S: Persistent + 'static> Persistent for RaftRoot<S> {
    const __LAYOUT_CHECK: () = {
        let () = <PMutex<LogArea> as Persistent>::__LAYOUT_CHECK;
        let () = <PMutex<MachineArea<S>> as Persistent>::__LAYOUT_CHECK;
        assert!(size_of::<RaftRoot<S>>() == 128 + size_of::<PMutex<MachineArea<S>>>());
    };
}

// The schemas ptm records for a ptm-raft pool (see `ptm::Schema`): the areas' fields, with the
// application's state type described by its own `Schema`.
impl<S: Persistent + 'static> ptm::Schema for MachineArea<S> {
    fn describe(d: &mut ptm::pmem_core::schema::Describer) -> ptm::pmem_core::schema::TypeSchema {
        d.record::<Self>("MachineArea", size_of::<Self>(), |d| {
            vec![
                ("applied".into(), d.of::<PVec<u8>>()),
                ("membership".into(), d.of::<PVec<u8>>()),
                ("snapshot_meta".into(), d.of::<PVec<u8>>()),
                ("snapshot_data".into(), d.of::<PVec<u8>>()),
                ("snapshot_seq".into(), d.of::<PCell<u64>>()),
                ("state".into(), d.of::<S>()),
            ]
        })
    }
}

impl<S: Persistent + 'static> ptm::Schema for RaftRoot<S> {
    fn describe(d: &mut ptm::pmem_core::schema::Describer) -> ptm::pmem_core::schema::TypeSchema {
        d.record::<Self>("RaftRoot", size_of::<Self>(), |d| {
            vec![
                ("log".into(), d.of::<PMutex<LogArea>>()),
                ("machine".into(), d.of::<PMutex<MachineArea<S>>>()),
            ]
        })
    }
}

// ---- records: CRC32C (4 bytes LE) then the value as JSON, or the raw bytes -------------------

fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn unseal<'b>(what: &'static str, bytes: &'b [u8]) -> Result<&'b [u8]> {
    let corrupt = |detail: String| Error::Corrupt { what, detail };
    if bytes.len() < 4 {
        return Err(corrupt(format!(
            "{} bytes, shorter than its checksum",
            bytes.len()
        )));
    }
    let (sum, payload) = bytes.split_at(4);
    let stored = u32::from_le_bytes(sum.try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(payload);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum {actual:#010x} of {} bytes, {stored:#010x} stored",
            payload.len()
        )));
    }
    Ok(payload)
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(|source| Error::Encode { what, source })?;
    Ok(seal(&json))
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(unseal(what, bytes)?).map_err(|e| Error::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn read_record<T: DeserializeOwned>(
    tx: &Transaction<'_>,
    cell: &PVec<u8>,
    what: &'static str,
) -> Result<Option<T>> {
    if cell.is_empty(tx) {
        return Ok(None);
    }
    decode(what, &cell.to_vec(tx)?).map(Some)
}

fn write_record<T: Serialize>(
    tx: &Transaction<'_>,
    cell: &PVec<u8>,
    what: &'static str,
    value: Option<&T>,
) -> Result<()> {
    match value {
        None => cell.clear(tx)?,
        Some(v) => cell.assign(tx, encode(what, v)?)?,
    }
    Ok(())
}

// ---- the store -------------------------------------------------------------------------------

struct Inner<A: Application> {
    pool: Pool<RaftRoot<A::State>>,
    app: A,
    snapshots_installed: AtomicU64,
    /// Admits one transaction at a time (see [`run`]).
    gate: Mutex<()>,
    /// A snapshot is being received (`begin_receiving_snapshot` until its install committed).
    receiving: AtomicBool,
    /// The part of a purge held back until the incoming snapshot is installed (see `purge`).
    deferred_purge: Mutex<Option<LogId<u64>>>,
    /// The first error of a log append or a state-machine apply (each stops the node), as
    /// text: what [`RaftStore::write_failure`] reports.
    write_failure: Mutex<Option<String>>,
}

impl<A: Application> Inner<A> {
    /// Records `e` as the store's write failure unless one is recorded already.
    fn write_failed(&self, e: &Error) {
        self.write_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| e.to_string());
    }
}

/// A replicated pool: one ptm pool holding a Raft log and a state machine. Hand
/// [`log_store`](RaftStore::log_store) and [`state_machine`](RaftStore::state_machine) to
/// `openraft::Raft::new`; read the application's state with [`read`](RaftStore::read).
pub struct RaftStore<A: Application> {
    inner: Arc<Inner<A>>,
}

impl<A: Application> Clone for RaftStore<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Application> Debug for RaftStore<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore")
            .field("pool", &self.inner.pool)
            .finish()
    }
}

impl<A: Application> RaftStore<A> {
    /// Creates a pool of `size` bytes at `path` holding an empty log and state.
    ///
    /// # Errors
    ///
    /// The pool's creation errors ([`Error::Pool`]).
    pub fn create(path: impl AsRef<Path>, size: u64, opts: &PoolOptions, app: A) -> Result<Self> {
        let pool = Pool::<RaftRoot<A::State>>::create(path, size, opts)?;
        pool.transaction(|tx, root| {
            let log = root.log.lock(tx)?;
            log.magic.set(tx, MAGIC)?;
            log.version.set(tx, FORMAT_VERSION)
        })?;
        Self::checked(pool, app)
    }

    /// Opens the pool at `path` (ptm's recovery runs first) and checks every record of the
    /// replicated state (checksums, decoding, the log's shape) before handing it out.
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] (not a pool, corrupt pool metadata, a root of another size, locked, I/O),
    /// [`Error::NotRaftPool`], [`Error::UnsupportedVersion`], [`Error::Corrupt`].
    pub fn open(path: impl AsRef<Path>, opts: &PoolOptions, app: A) -> Result<Self> {
        let pool = Pool::<RaftRoot<A::State>>::open(path, opts)?;
        Self::checked(pool, app)
    }

    /// [`open`](RaftStore::open) if `path` exists, else [`create`](RaftStore::create).
    ///
    /// # Errors
    ///
    /// As those two.
    pub fn open_or_create(path: impl AsRef<Path>, size: u64, opts: &PoolOptions, app: A) -> Result<Self> {
        if path.as_ref().exists() {
            Self::open(path, opts, app)
        } else {
            Self::create(path, size, opts, app)
        }
    }

    fn checked(pool: Pool<RaftRoot<A::State>>, app: A) -> Result<Self> {
        pool.transaction(|tx, root| {
            let log = root.log.lock(tx)?;
            let (magic, version) = (log.magic.get(tx), log.version.get(tx));
            if magic == 0 && version == 0 && log.entries.is_empty(tx) && log.vote.is_empty(tx) {
                // Created, then crashed before the first transaction: an empty store.
                log.magic.set(tx, MAGIC)?;
                log.version.set(tx, FORMAT_VERSION)?;
            } else if magic != MAGIC {
                return Err(Error::NotRaftPool {
                    found: magic,
                    expected: MAGIC,
                });
            } else if version != FORMAT_VERSION {
                return Err(Error::UnsupportedVersion {
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            check_log::<Conf<A>>(tx, log)?;
            let m = root.machine.lock(tx)?;
            let applied = read_record::<Option<LogId<u64>>>(tx, &m.applied, "applied log id")?.flatten();
            read_record::<StoredMembership<u64, BasicNode>>(tx, &m.membership, "membership")?;
            let snapshot = read_record::<Meta>(tx, &m.snapshot_meta, "snapshot metadata")?;
            // openraft restarts only if the purged entries are held by the current snapshot
            // (it checks this at startup and panics otherwise): refuse with a named error.
            let purged = read_record::<LogId<u64>>(tx, &log.purged, "purged log id")?;
            if let Some(s) = &snapshot {
                if purged.map(|p| p.index) > s.last_log_id.map(|l| l.index) {
                    return Err(Error::Corrupt {
                        what: "log shape",
                        detail: format!(
                            "entries purged up to {purged:?}, but the snapshot holds only up to {:?} \
                             (applied: {applied:?})",
                            s.last_log_id
                        ),
                    });
                }
            }
            if !m.snapshot_data.is_empty(tx) {
                unseal("snapshot data", &m.snapshot_data.to_vec(tx)?)?;
            }
            Ok(())
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                app,
                snapshots_installed: AtomicU64::new(0),
                gate: Mutex::new(()),
                receiving: AtomicBool::new(false),
                deferred_purge: Mutex::new(None),
                write_failure: Mutex::new(None),
            }),
        })
    }

    /// The log handle for `openraft::Raft::new` (also its log reader).
    pub fn log_store(&self) -> LogStore<A> {
        LogStore {
            inner: self.inner.clone(),
        }
    }

    /// The state machine handle for `openraft::Raft::new` (also its snapshot builder).
    pub fn state_machine(&self) -> StateMachine<A> {
        StateMachine {
            inner: self.inner.clone(),
        }
    }

    /// The persistence domain of the pool (`Journaled` for a plain file, `CacheFlush` for pmem).
    pub fn domain(&self) -> ptm::DomainKind {
        self.inner.pool.domain()
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.inner.app
    }

    /// Snapshots installed from a leader since this store was opened.
    pub fn snapshots_installed(&self) -> u64 {
        self.inner.snapshots_installed.load(Ordering::Relaxed)
    }

    /// The first error that failed a log append or a state-machine apply of this store (say
    /// "out of pool space"), if any. Either stops the node; openraft's own stop reason may
    /// name only what it saw next (a closed channel of its storage task), so this is the
    /// cause to report.
    pub fn write_failure(&self) -> Option<String> {
        self.inner
            .write_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` on the application's state in a transaction (under the state machine's lock:
    /// a consistent read), on tokio's blocking pool. What it reads is this node's applied state:
    /// for a linearizable read, ask the leader's `Raft::ensure_linearizable` first.
    ///
    /// # Errors
    ///
    /// `f`'s errors, pool errors.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t Transaction<'t>, &'t A::State) -> Result<T> + Send + 'static,
    {
        run(&self.inner, move |inner| {
            inner.pool.transaction(|tx, root| {
                let m = root.machine.lock(tx)?;
                f(tx, &m.state)
            })
        })
        .await
    }

    /// The pool offsets of the log's records, for tests that damage them (`(name, offset of
    /// the record's buffer)`).
    #[doc(hidden)]
    pub fn record_offsets(&self) -> Result<Vec<(&'static str, u64)>> {
        self.inner.pool.transaction(|tx, root| {
            let log = root.log.lock(tx)?;
            let m = root.machine.lock(tx)?;
            let mut out = Vec::new();
            for (name, cell) in [
                ("vote", &log.vote),
                ("committed", &log.committed),
                ("applied", &m.applied),
            ] {
                if let Some(off) = cell.buffer_offset(tx) {
                    out.push((name, off));
                }
            }
            Ok(out)
        })
    }
}

/// Runs `f` (one transaction) on tokio's blocking pool, after the store's gate: one transaction
/// at a time. ptm's allocator holds a chunk's metadata lock until the transaction that allocated
/// or freed in it ends, so a long state-machine transaction (installing a large snapshot) made a
/// concurrent purge of the log fail with `LockTimeout` (seen in the cluster test: the node
/// stopped), and two transactions freeing into each other's chunks could wait on each other
/// until the timeout. Serialized, a long transaction only delays the next one.
async fn run<A, T, F>(inner: &Arc<Inner<A>>, f: F) -> Result<T>
where
    A: Application,
    T: Send + 'static,
    F: FnOnce(&Inner<A>) -> Result<T> + Send + 'static,
{
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || {
        let _turn = inner.gate.lock().unwrap_or_else(|p| p.into_inner());
        f(&inner)
    })
    .await?
}

/// Checks every log record: vote, committed, purged, and each entry (checksum, decoding, its
/// index equal to its key, indices contiguous from `first` to `end`).
fn check_log<C>(tx: &Transaction<'_>, log: &LogArea) -> Result<()>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Entry = Entry<C>>,
{
    read_record::<Vote<u64>>(tx, &log.vote, "vote")?;
    read_record::<LogId<u64>>(tx, &log.committed, "committed log id")?;
    let purged = read_record::<LogId<u64>>(tx, &log.purged, "purged log id")?;
    let (first, end) = (log.first.get(tx), log.end.get(tx));
    let shape = |detail: String| Error::Corrupt {
        what: "log shape",
        detail,
    };
    if first > end {
        return Err(shape(format!("first index {first} after end {end}")));
    }
    if log.entries.len(tx) != end - first {
        return Err(shape(format!(
            "{} entries stored for indices [{first}, {end})",
            log.entries.len(tx)
        )));
    }
    if let (Some(p), true) = (purged, first < end) {
        if first <= p.index {
            return Err(shape(format!(
                "entry {first} present but purged up to {}",
                p.index
            )));
        }
    }
    let mut expected = first;
    for (key, bytes) in log.entries.range_refs(tx, first..end)? {
        let entry: Entry<C> = decode("log entry", &bytes.to_vec(tx)?)?;
        if key != expected || entry.log_id.index != key {
            return Err(shape(format!(
                "entry with log index {} stored at key {key}, expected {expected}",
                entry.log_id.index
            )));
        }
        expected += 1;
    }
    if expected != end {
        return Err(shape(format!("entries end at {expected}, expected {end}")));
    }
    Ok(())
}

// ---- the log ---------------------------------------------------------------------------------

/// The Raft log on a ptm pool: openraft's `RaftLogStorage` and `RaftLogReader`.
pub struct LogStore<A: Application> {
    inner: Arc<Inner<A>>,
}

impl<A: Application> Clone for LogStore<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Application> Debug for LogStore<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore { .. }")
    }
}

fn read_entry<C>(tx: &Transaction<'_>, log: &LogArea, index: u64) -> Result<Entry<C>>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Entry = Entry<C>>,
{
    match log.entries.get_ref(tx, &index)? {
        Some(bytes) => decode("log entry", &bytes.to_vec(tx)?),
        None => Err(Error::Corrupt {
            what: "log shape",
            detail: format!(
                "entry {index} missing inside [{}, {})",
                log.first.get(tx),
                log.end.get(tx)
            ),
        }),
    }
}

/// Removes entries `from..to` (keys absent are skipped).
fn remove_entries(tx: &Transaction<'_>, log: &LogArea, from: u64, to: u64) -> Result<()> {
    for index in from..to {
        log.entries.remove_free(tx, &index)?;
    }
    Ok(())
}

impl<A: Application> RaftLogReader<Conf<A>> for LogStore<A> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Conf<A>>>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(&a) => a,
            Bound::Excluded(&a) => a.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let stop = match range.end_bound() {
            Bound::Included(&b) => b.saturating_add(1),
            Bound::Excluded(&b) => b,
            Bound::Unbounded => u64::MAX,
        };
        run(&self.inner, move |inner| {
            inner.pool.transaction(|tx, root| {
                let log = root.log.lock(tx)?;
                let (lo, hi) = (start.max(log.first.get(tx)), stop.min(log.end.get(tx)));
                let mut out = Vec::with_capacity(hi.saturating_sub(lo).min(4096) as usize);
                if lo < hi {
                    for (_, bytes) in log.entries.range_refs(tx, lo..hi)? {
                        out.push(decode("log entry", &bytes.to_vec(tx)?)?);
                    }
                }
                Ok(out)
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl<A: Application> RaftLogStorage<Conf<A>> for LogStore<A> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Conf<A>>, StorageError<u64>> {
        run(&self.inner, |inner| {
            inner.pool.transaction(|tx, root| {
                let log = root.log.lock(tx)?;
                let purged = read_record::<LogId<u64>>(tx, &log.purged, "purged log id")?;
                let (first, end) = (log.first.get(tx), log.end.get(tx));
                let last = if first < end {
                    Some(read_entry::<Conf<A>>(tx, log, end - 1)?.log_id)
                } else {
                    purged
                };
                Ok(LogState {
                    last_purged_log_id: purged,
                    last_log_id: last,
                })
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let bytes = encode("vote", vote).map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))?;
        run(&self.inner, move |inner| {
            inner.pool.transaction(|tx, root| {
                root.log.lock(tx)?.vote.assign(tx, bytes)?;
                Ok(())
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        run(&self.inner, |inner| {
            inner
                .pool
                .transaction(|tx, root| read_record(tx, &root.log.lock(tx)?.vote, "vote"))
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        run(&self.inner, move |inner| {
            inner.pool.transaction(|tx, root| {
                write_record(
                    tx,
                    &root.log.lock(tx)?.committed,
                    "committed log id",
                    committed.as_ref(),
                )
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        run(&self.inner, |inner| {
            inner
                .pool
                .transaction(|tx, root| read_record(tx, &root.log.lock(tx)?.committed, "committed log id"))
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Conf<A>>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<Conf<A>>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let storage = |e: Error| {
            self.inner.write_failed(&e);
            e.into_storage(ErrorSubject::Logs, ErrorVerb::Write)
        };
        let batch = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode("log entry", &e)?)))
            .collect::<Result<Vec<_>>>()
            .map_err(storage)?;
        if batch.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // One transaction for the whole batch; it returns once durable (strict commit), so
        // the flushed callback below follows durability.
        run(&self.inner, move |inner| {
            inner.pool.transaction(|tx, root| {
                let log = root.log.lock(tx)?;
                let (mut first, mut end) = (log.first.get(tx), log.end.get(tx));
                for (index, bytes) in &batch {
                    let index = *index;
                    if first == end {
                        (first, end) = (index, index);
                    } else if index < first || index > end {
                        return Err(Error::LogGap { index, first, end });
                    }
                    if index < end {
                        // Overwriting: what follows it is stale (openraft truncates first; this
                        // keeps the log whole if it did not).
                        remove_entries(tx, log, index + 1, end)?;
                    }
                    end = index + 1;
                    log.entries
                        .get_or_insert_new(tx, index)?
                        .assign(tx, bytes.iter().copied())?;
                }
                log.first.set(tx, first)?;
                log.end.set(tx, end)?;
                Ok(())
            })
        })
        .await
        .map_err(storage)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        run(&self.inner, move |inner| {
            inner.pool.transaction(|tx, root| {
                let log = root.log.lock(tx)?;
                let (first, end) = (log.first.get(tx), log.end.get(tx));
                let since = log_id.index;
                if since >= end {
                    return Ok(());
                }
                remove_entries(tx, log, since.max(first), end)?;
                if since <= first {
                    log.first.set(tx, since)?;
                }
                log.end.set(tx, since)?;
                Ok(())
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        run(&self.inner, move |inner| {
            inner.pool.transaction(|tx, root| {
                let log = root.log.lock(tx)?;
                let m = root.machine.lock(tx)?;
                let snapshot = read_record::<Meta>(tx, &m.snapshot_meta, "snapshot metadata")?;
                let covered = snapshot.and_then(|s| s.last_log_id);
                let mut upto = log_id;
                if inner.receiving.load(Ordering::Acquire) && covered.map(|c| c.index) < Some(log_id.index) {
                    // openraft purges the log a follower's incoming snapshot covers as soon as it
                    // queues the install, before the install is durable: a crash in between
                    // would leave entries purged that no snapshot or state holds (openraft then
                    // refuses to start). Purge what the durable snapshot covers now; the install
                    // transaction purges the rest.
                    let mut deferred = inner.deferred_purge.lock().unwrap_or_else(|p| p.into_inner());
                    if deferred.is_none_or(|d| d.index < log_id.index) {
                        *deferred = Some(log_id);
                    }
                    match covered {
                        Some(c) => upto = c,
                        None => return Ok(()),
                    }
                }
                purge_log(tx, log, upto)
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}

/// Removes the entries up to `upto` (inclusive) and records it as purged (the purged log id never
/// moves back).
fn purge_log(tx: &Transaction<'_>, log: &LogArea, upto: LogId<u64>) -> Result<()> {
    let purged = read_record::<LogId<u64>>(tx, &log.purged, "purged log id")?;
    let (first, end) = (log.first.get(tx), log.end.get(tx));
    let past = upto.index.saturating_add(1);
    if first < end {
        remove_entries(tx, log, first, past.min(end))?;
    }
    let new_first = first.max(past);
    log.first.set(tx, new_first)?;
    log.end.set(tx, end.max(new_first))?;
    if purged.is_some_and(|p| p.index >= upto.index) {
        return Ok(());
    }
    write_record(tx, &log.purged, "purged log id", Some(&upto))
}

// ---- the state machine -----------------------------------------------------------------------

/// The state machine on a ptm pool: openraft's `RaftStateMachine` and `RaftSnapshotBuilder`.
pub struct StateMachine<A: Application> {
    inner: Arc<Inner<A>>,
}

impl<A: Application> Clone for StateMachine<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Application> Debug for StateMachine<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMachine { .. }")
    }
}

type Meta = SnapshotMeta<u64, BasicNode>;

impl<A: Application> RaftSnapshotBuilder<Conf<A>> for StateMachine<A> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Conf<A>>, StorageError<u64>> {
        run(&self.inner, |inner| {
            inner.pool.transaction(|tx, root| {
                let m = root.machine.lock(tx)?;
                let last_log_id =
                    read_record::<Option<LogId<u64>>>(tx, &m.applied, "applied log id")?.flatten();
                let last_membership = read_record(tx, &m.membership, "membership")?.unwrap_or_default();
                let data = inner.app.snapshot(tx, &m.state)?;
                let seq = m.snapshot_seq.get(tx).wrapping_add(1);
                m.snapshot_seq.set(tx, seq)?;
                let snapshot_id = match &last_log_id {
                    Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
                    None => format!("--{seq}"),
                };
                let meta = Meta {
                    last_log_id,
                    last_membership,
                    snapshot_id,
                };
                write_record(tx, &m.snapshot_meta, "snapshot metadata", Some(&meta))?;
                m.snapshot_data.assign(tx, seal(&data))?;
                Ok(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                })
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl<A: Application> RaftStateMachine<Conf<A>> for StateMachine<A> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        run(&self.inner, |inner| {
            inner.pool.transaction(|tx, root| {
                let m = root.machine.lock(tx)?;
                let applied = read_record::<Option<LogId<u64>>>(tx, &m.applied, "applied log id")?.flatten();
                let membership = read_record(tx, &m.membership, "membership")?.unwrap_or_default();
                Ok((applied, membership))
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Read))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<AppResponse<A>>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<Conf<A>>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<Conf<A>>> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // One transaction: the requests' effects, the applied log id and the membership.
        run(&self.inner, move |inner| {
            inner.pool.transaction(|tx, root| {
                let m = root.machine.lock(tx)?;
                let mut out = Vec::with_capacity(entries.len());
                let mut membership = None;
                for entry in &entries {
                    match &entry.payload {
                        EntryPayload::Blank => out.push(inner.app.empty_response()),
                        EntryPayload::Normal(request) => {
                            out.push(inner.app.apply(tx, &m.state, &entry.log_id, request)?)
                        }
                        EntryPayload::Membership(mem) => {
                            membership = Some(StoredMembership::new(Some(entry.log_id), mem.clone()));
                            out.push(inner.app.empty_response());
                        }
                    }
                }
                let last = entries.last().map(|e| e.log_id);
                write_record(tx, &m.applied, "applied log id", Some(&last))?;
                if let Some(mem) = membership {
                    write_record(tx, &m.membership, "membership", Some(&mem))?;
                }
                Ok(out)
            })
        })
        .await
        .map_err(|e| {
            self.inner.write_failed(&e);
            e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Write)
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        self.inner.receiving.store(true, Ordering::Release);
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let meta = meta.clone();
        let signature = Some(meta.signature());
        let data = snapshot.into_inner();
        // One transaction: the state replaced, applied log id, membership, current snapshot,
        // and the purge of the log it covers that `purge` deferred.
        run(&self.inner, move |inner| {
            let mut deferred = inner.deferred_purge.lock().unwrap_or_else(|p| p.into_inner());
            let purge_now = match (*deferred, meta.last_log_id) {
                (Some(d), Some(last)) => Some(if d.index <= last.index { d } else { last }),
                _ => None,
            };
            inner.pool.transaction(|tx, root| {
                let log = root.log.lock(tx)?;
                let m = root.machine.lock(tx)?;
                inner.app.restore(tx, &m.state, &data)?;
                write_record(tx, &m.applied, "applied log id", Some(&meta.last_log_id))?;
                write_record(tx, &m.membership, "membership", Some(&meta.last_membership))?;
                write_record(tx, &m.snapshot_meta, "snapshot metadata", Some(&meta))?;
                m.snapshot_data.assign(tx, seal(&data))?;
                if let Some(upto) = purge_now {
                    purge_log(tx, log, upto)?;
                }
                Ok::<_, Error>(())
            })?;
            if deferred.map(|d| d.index) <= meta.last_log_id.map(|l| l.index) {
                *deferred = None;
            }
            inner.receiving.store(false, Ordering::Release);
            inner.snapshots_installed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Snapshot(signature), ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Conf<A>>>, StorageError<u64>> {
        run(&self.inner, |inner| {
            inner.pool.transaction(|tx, root| {
                let m = root.machine.lock(tx)?;
                let Some(meta) = read_record::<Meta>(tx, &m.snapshot_meta, "snapshot metadata")? else {
                    return Ok(None);
                };
                let sealed = m.snapshot_data.to_vec(tx)?;
                let data = unseal("snapshot data", &sealed)?.to_vec();
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                }))
            })
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }
}
