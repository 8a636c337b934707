//! `ptm-kv`: a replicated key-value store on [`RaftStore`](crate::RaftStore), the example
//! service of this crate. [`KvApp`] is the application (a persistent string map), [`server`]
//! runs a node over TCP, [`client`] talks to one.

use std::io::Cursor;

use openraft::LogId;
use ptm::{Persistent, Transaction};
use ptm_collections::{PBTreeMap, PString};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Application;

pub mod client;
pub mod proto;
pub mod server;

openraft::declare_raft_types!(
    /// openraft's types for `ptm-kv`: requests [`KvRequest`], responses [`KvResponse`], `u64`
    /// node ids, [`BasicNode`](openraft::BasicNode) addresses, tokio.
    pub KvConfig:
        D = KvRequest,
        R = KvResponse,
);

/// A replicated write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRequest {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// The answer to a [`KvRequest`] once applied: the value the key had before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    /// The previous value (`None`: the key was absent).
    pub previous: Option<String>,
}

/// The replicated state of `ptm-kv`: an ordered string map in the pool.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
pub struct KvState {
    map: PBTreeMap<PString, PString>,
}

impl std::fmt::Debug for KvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KvState { .. }")
    }
}

impl KvState {
    /// The value of `key`.
    ///
    /// # Errors
    ///
    /// Read errors of a corrupted map.
    pub fn get(&self, tx: &Transaction<'_>, key: &str) -> Result<Option<String>> {
        match self.map.get_ref(tx, key)? {
            Some(v) => Ok(Some(v.as_string(tx)?)),
            None => Ok(None),
        }
    }

    /// Every entry, in key order.
    ///
    /// # Errors
    ///
    /// Read errors of a corrupted map.
    pub fn entries(&self, tx: &Transaction<'_>) -> Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(self.map.len(tx) as usize);
        for (k, v) in self.map.iter_refs(tx)? {
            out.push((k.as_string(tx)?, v.as_string(tx)?));
        }
        Ok(out)
    }

    fn put(&self, tx: &Transaction<'_>, key: &str, value: &str) -> Result<Option<String>> {
        let previous = self.get(tx, key)?;
        self.map.get_or_insert_new(tx, key)?.set(tx, value)?;
        Ok(previous)
    }

    fn delete(&self, tx: &Transaction<'_>, key: &str) -> Result<Option<String>> {
        let previous = self.get(tx, key)?;
        if previous.is_some() {
            self.map.remove_free(tx, key)?;
        }
        Ok(previous)
    }
}

/// The `ptm-kv` application: applies [`KvRequest`]s to a [`KvState`]; snapshots are the
/// entries as JSON.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvApp;

impl Application for KvApp {
    type Config = KvConfig;
    type State = KvState;

    fn apply(
        &self,
        tx: &Transaction<'_>,
        state: &KvState,
        _log_id: &LogId<u64>,
        request: &KvRequest,
    ) -> Result<KvResponse> {
        let previous = match request {
            KvRequest::Put { key, value } => state.put(tx, key, value)?,
            KvRequest::Delete { key } => state.delete(tx, key)?,
        };
        Ok(KvResponse { previous })
    }

    fn empty_response(&self) -> KvResponse {
        KvResponse::default()
    }

    fn snapshot(&self, tx: &Transaction<'_>, state: &KvState) -> Result<Vec<u8>> {
        serde_json::to_vec(&state.entries(tx)?).map_err(|source| Error::Encode {
            what: "kv snapshot",
            source,
        })
    }

    fn restore(&self, tx: &Transaction<'_>, state: &KvState, data: &[u8]) -> Result<()> {
        let entries: Vec<(String, String)> = serde_json::from_slice(data).map_err(|e| Error::Corrupt {
            what: "snapshot data",
            detail: e.to_string(),
        })?;
        state.map.clear(tx)?;
        for (k, v) in &entries {
            state.map.get_or_insert_new(tx, k.as_str())?.set(tx, v)?;
        }
        Ok(())
    }
}

/// `Cursor` is named by [`KvConfig`]'s snapshot type.
#[allow(dead_code)]
type SnapshotBytes = Cursor<Vec<u8>>;
