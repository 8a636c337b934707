//! The `ptm-kv` wire protocol: length-prefixed JSON frames over TCP (a 4-byte little-endian
//! length, then a [`Message`] or a [`Reply`]). One connection carries one request at a time.

use std::collections::BTreeMap;
use std::io;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::KvConfig;

/// The largest frame accepted (a snapshot chunk, a batch of entries): 64 MiB. A longer length
/// prefix is an error, never an allocation.
pub const MAX_FRAME: usize = 64 << 20;

/// A request to a node: a Raft RPC from a peer (naming its sender, so that non-members are
/// refused), or a client request.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// openraft's AppendEntries from node `from`.
    AppendEntries {
        /// The sender's node id.
        from: u64,
        /// The RPC.
        rpc: AppendEntriesRequest<KvConfig>,
    },
    /// openraft's RequestVote from node `from`.
    Vote {
        /// The sender's node id.
        from: u64,
        /// The RPC.
        rpc: VoteRequest<u64>,
    },
    /// A snapshot chunk from node `from`.
    InstallSnapshot {
        /// The sender's node id.
        from: u64,
        /// The RPC.
        rpc: InstallSnapshotRequest<KvConfig>,
    },
    /// A client request.
    Client(ClientRequest),
}

/// What a client can ask a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Replicated write of `key = value` (leader only).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Linearizable read through the leader.
    Get {
        /// The key.
        key: String,
    },
    /// Replicated delete (leader only).
    Delete {
        /// The key.
        key: String,
    },
    /// Every entry of this node's applied state, without asking the leader (not linearizable:
    /// for checking what a node holds).
    LocalDump,
    /// Makes this node form a new cluster of `members` (id to address).
    Init {
        /// The first voters.
        members: BTreeMap<u64, String>,
    },
    /// Adds node `id` at `addr`: as a learner until it caught up, then as a voter (leader only).
    AddNode {
        /// The new node's id.
        id: u64,
        /// Its address.
        addr: String,
    },
    /// Removes node `id` from the cluster (leader only).
    RemoveNode {
        /// The node to remove.
        id: u64,
    },
    /// This node's view of the cluster.
    Status,
}

/// A node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to [`Message::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// Answer to [`Message::Vote`].
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// Answer to [`Message::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// A Raft RPC refused because its sender is not a member of this node's cluster.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Answer to [`Message::Client`].
    Client(Result<ClientReply, ClientError>),
}

/// A successful client request's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// [`ClientRequest::Get`]: the value.
    Value(Option<String>),
    /// [`ClientRequest::Put`] / [`ClientRequest::Delete`], committed and applied: the previous
    /// value.
    Written {
        /// The value before.
        previous: Option<String>,
    },
    /// [`ClientRequest::LocalDump`].
    Entries(Vec<(String, String)>),
    /// [`ClientRequest::Init`], [`ClientRequest::AddNode`], [`ClientRequest::RemoveNode`].
    Done,
    /// [`ClientRequest::Status`].
    Status(NodeStatus),
}

/// A node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node.
    pub id: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// Voters of its membership.
    pub voters: Vec<u64>,
    /// Learners of its membership.
    pub learners: Vec<u64>,
    /// Index of the last entry applied to its state machine.
    pub last_applied: Option<u64>,
    /// Snapshots it installed from a leader since it started.
    pub snapshots_installed: u64,
    /// Why its Raft stopped (a storage error, ...), when it did.
    pub stopped: Option<String>,
}

/// A failed client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClientError {
    /// This node is not the leader; ask `addr` (when known).
    #[error("not the leader (leader: {leader:?} at {addr:?})")]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
        /// The leader's address, if known.
        addr: Option<String>,
    },
    /// The request failed (openraft's error, as text).
    #[error("request failed: {reason}")]
    Failed {
        /// openraft's error message.
        reason: String,
    },
}

/// Writes one frame.
///
/// # Errors
///
/// I/O errors; `InvalidData` when the message does not encode or exceeds [`MAX_FRAME`].
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    w.write_all(&(body.len() as u32).to_le_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await
}

/// Reads one frame; `None` at a clean end of stream.
///
/// # Errors
///
/// I/O errors; `InvalidData` for a length over [`MAX_FRAME`] or a body that does not decode.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
