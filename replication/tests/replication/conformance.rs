//! openraft's own storage conformance suite (`openraft::testing::Suite`) against the ptm-backed
//! log store and state machine, on emulated pmem and on the journaled disk engine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use ptm::PoolOptions;
use ptm_raft::kv::{KvApp, KvConfig};
use ptm_raft::{LogStore, RaftStore, StateMachine};
use tempfile::TempDir;

struct Builder {
    pmem: bool,
}

impl StoreBuilder<KvConfig, LogStore<KvApp>, StateMachine<KvApp>, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore<KvApp>, StateMachine<KvApp>), StorageError<u64>> {
        // Emulated pmem needs more room: its heap is laid out for cache-line flushing (an 8 MiB
        // pool ran out of contiguous space in the suite's snapshot test).
        let (dir, opts, size) = if self.pmem {
            let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm");
            (dir, PoolOptions::new().force_pmem(true), 16 << 20)
        } else {
            // The journaled engine (a plain file, not forced to pmem), on tmpfs so that its
            // fdatasyncs cost little: the suite is about semantics, not the disk.
            let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm");
            (dir, PoolOptions::new(), 8 << 20)
        };
        let store =
            RaftStore::create(dir.path().join("raft.pool"), size, &opts, KvApp).expect("create a raft pool");
        Ok((dir, store.log_store(), store.state_machine()))
    }
}

#[test]
fn openraft_suite_on_emulated_pmem() {
    if let Err(e) = Suite::test_all(Builder { pmem: true }) {
        panic!("openraft's storage suite failed: {e}");
    }
}

#[test]
fn openraft_suite_on_journaled_disk_engine() {
    if let Err(e) = Suite::test_all(Builder { pmem: false }) {
        panic!("openraft's storage suite failed: {e}");
    }
}
