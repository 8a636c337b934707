//! A `ptm-kv` node: a [`RaftStore`] of [`KvApp`], openraft, and a TCP server for peers and
//! clients.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, ChangeMembers, Config, Raft, RaftNetwork, RaftNetworkFactory, SnapshotPolicy};
use ptm::PoolOptions;
use tokio::io::{BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use super::proto::{
    read_frame, write_frame, ClientError, ClientReply, ClientRequest, Message, NodeStatus, Reply,
};
use super::{KvApp, KvConfig, KvRequest};
use crate::RaftStore;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's id (unique in the cluster, not 0).
    pub id: u64,
    /// The address it listens on and that peers reach it at (`127.0.0.1:7001`).
    pub addr: String,
    /// Its pool file (created if absent).
    pub pool: PathBuf,
    /// Size of a new pool.
    pub pool_size: u64,
    /// Treat the pool file as persistent memory (a file on `/dev/shm` in tests).
    pub force_pmem: bool,
    /// Build a snapshot (and purge the log before it) every this many applied entries.
    pub snapshot_every: u64,
    /// Leader heartbeat, in milliseconds; elections start after 4 to 8 missed heartbeats.
    pub heartbeat_ms: u64,
}

impl NodeOptions {
    /// Options with the defaults: a 256 MiB pool, the journaled disk engine, a snapshot every
    /// 10 000 entries, a 150 ms heartbeat.
    pub fn new(id: u64, addr: impl Into<String>, pool: impl Into<PathBuf>) -> Self {
        Self {
            id,
            addr: addr.into(),
            pool: pool.into(),
            pool_size: 256 << 20,
            force_pmem: false,
            snapshot_every: 10_000,
            heartbeat_ms: 150,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The pool could not be opened or is corrupt ([`crate::Error::Corrupt`], ...): the node
    /// refuses to start rather than join with bad state.
    #[error("pool {path}: {source}")]
    Pool {
        /// The pool file.
        path: PathBuf,
        /// Why.
        source: crate::Error,
    },
    /// openraft refused the configuration.
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    /// openraft failed to start.
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<u64>),
    /// The address could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
}

/// A running node.
#[derive(Clone)]
pub struct Node {
    id: u64,
    raft: Raft<KvConfig>,
    store: RaftStore<KvApp>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens (or creates) the pool, starts openraft and binds the address. Serve with
    /// [`serve`](Node::serve).
    ///
    /// # Errors
    ///
    /// [`StartError`].
    pub async fn start(opts: &NodeOptions) -> Result<(Self, TcpListener), StartError> {
        let pool_opts = PoolOptions::new().layout("ptm-kv").force_pmem(opts.force_pmem);
        let store =
            RaftStore::open_or_create(&opts.pool, opts.pool_size, &pool_opts, KvApp).map_err(|source| {
                StartError::Pool {
                    path: opts.pool.clone(),
                    source,
                }
            })?;
        let config = Config {
            cluster_name: "ptm-kv".into(),
            heartbeat_interval: opts.heartbeat_ms,
            election_timeout_min: opts.heartbeat_ms * 4,
            election_timeout_max: opts.heartbeat_ms * 8,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
            max_in_snapshot_log_to_keep: 100,
            // A follower installs a snapshot in one transaction before it answers the last
            // chunk: on a large state that is seconds, not openraft's default 200 ms.
            install_snapshot_timeout: 60_000,
            // Entries per AppendEntries: a follower stores a batch in one transaction, which
            // must finish within the RPC's deadline (openraft's default is 300).
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()?;
        let network = Network { from: opts.id };
        let raft = Raft::new(
            opts.id,
            Arc::new(config),
            network,
            store.log_store(),
            store.state_machine(),
        )
        .await?;
        let listener = TcpListener::bind(&opts.addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: opts.addr.clone(),
                source,
            })?;
        Ok((
            Self {
                id: opts.id,
                raft,
                store,
            },
            listener,
        ))
    }

    /// The openraft instance.
    pub fn raft(&self) -> &Raft<KvConfig> {
        &self.raft
    }

    /// Accepts connections forever, one task per connection.
    pub async fn serve(self, listener: TcpListener) {
        let node = Arc::new(self);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, a connection reset before accept: wait, go on.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let node = node.clone();
            tokio::spawn(async move { node.connection(stream).await });
        }
    }

    async fn connection(&self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
        while let Ok(Some(msg)) = read_frame::<_, Message>(&mut r).await {
            let reply = self.handle(msg).await;
            if write_frame(&mut w, &reply).await.is_err() {
                return;
            }
        }
    }

    /// Why a Raft RPC from `from` is refused: the sender is not in this node's membership. A
    /// node with no membership yet (a new node waiting to be added) accepts its first leader.
    fn refuse(&self, from: u64) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        if membership.nodes().next().is_none() || membership.get_node(&from).is_some() {
            None
        } else {
            Some(format!(
                "node {from} is not a member of node {}'s cluster",
                self.id
            ))
        }
    }

    /// Answers one message.
    pub async fn handle(&self, msg: Message) -> Reply {
        match msg {
            Message::AppendEntries { from, rpc } => match self.refuse(from) {
                Some(reason) => Reply::Rejected { reason },
                None => Reply::AppendEntries(self.raft.append_entries(rpc).await),
            },
            Message::Vote { from, rpc } => match self.refuse(from) {
                Some(reason) => Reply::Rejected { reason },
                None => Reply::Vote(self.raft.vote(rpc).await),
            },
            Message::InstallSnapshot { from, rpc } => match self.refuse(from) {
                Some(reason) => Reply::Rejected { reason },
                None => Reply::InstallSnapshot(self.raft.install_snapshot(rpc).await),
            },
            Message::Client(req) => Reply::Client(self.client(req).await),
        }
    }

    async fn client(&self, req: ClientRequest) -> Result<ClientReply, ClientError> {
        match req {
            ClientRequest::Put { key, value } => self.write(KvRequest::Put { key, value }).await,
            ClientRequest::Delete { key } => self.write(KvRequest::Delete { key }).await,
            ClientRequest::Get { key } => {
                self.raft.ensure_linearizable().await.map_err(failed)?;
                let value = self
                    .store
                    .read(move |tx, state| state.get(tx, &key))
                    .await
                    .map_err(|e| failed_text(e.to_string()))?;
                Ok(ClientReply::Value(value))
            }
            ClientRequest::LocalDump => {
                let entries = self
                    .store
                    .read(|tx, state| state.entries(tx))
                    .await
                    .map_err(|e| failed_text(e.to_string()))?;
                Ok(ClientReply::Entries(entries))
            }
            ClientRequest::Init { members } => {
                let members: BTreeMap<u64, BasicNode> = members
                    .into_iter()
                    .map(|(id, addr)| (id, BasicNode::new(addr)))
                    .collect();
                self.raft
                    .initialize(members)
                    .await
                    .map_err(|e| failed_text(e.to_string()))?;
                Ok(ClientReply::Done)
            }
            ClientRequest::AddNode { id, addr } => {
                self.raft
                    .add_learner(id, BasicNode::new(addr), true)
                    .await
                    .map_err(failed)?;
                let ids = BTreeSet::from([id]);
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(ids), false)
                    .await
                    .map_err(failed)?;
                Ok(ClientReply::Done)
            }
            ClientRequest::RemoveNode { id } => {
                let ids = BTreeSet::from([id]);
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(ids), false)
                    .await
                    .map_err(failed)?;
                Ok(ClientReply::Done)
            }
            ClientRequest::Status => {
                let m = self.raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                Ok(ClientReply::Status(NodeStatus {
                    id: self.id,
                    leader: m.current_leader,
                    term: m.current_term,
                    voters: membership.voter_ids().collect(),
                    learners: membership.learner_ids().collect(),
                    last_applied: m.last_applied.map(|l| l.index),
                    snapshots_installed: self.store.snapshots_installed(),
                    // The store's own failure first: openraft may have stopped on what it saw
                    // next (its storage task's channel closing) rather than on the cause.
                    stopped: m
                        .running_state
                        .as_ref()
                        .err()
                        .map(|e| match self.store.write_failure() {
                            Some(cause) => format!("{cause} (raft: {e})"),
                            None => e.to_string(),
                        }),
                }))
            }
        }
    }

    async fn write(&self, req: KvRequest) -> Result<ClientReply, ClientError> {
        let resp = self.raft.client_write(req).await.map_err(failed)?;
        Ok(ClientReply::Written {
            previous: resp.data.previous,
        })
    }
}

fn failed_text(reason: String) -> ClientError {
    ClientError::Failed { reason }
}

/// A client error from openraft's: a redirect to the leader when openraft gives one.
fn failed<E>(e: RaftError<u64, E>) -> ClientError
where
    E: std::error::Error + openraft::TryAsRef<openraft::error::ForwardToLeader<u64, BasicNode>>,
{
    if let Some(f) = e.forward_to_leader() {
        return ClientError::NotLeader {
            leader: f.leader_id,
            addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
        };
    }
    failed_text(e.to_string())
}

// ---- the network: one TCP connection per peer ------------------------------------------------

/// openraft's network factory: a [`Peer`] per target.
#[derive(Debug, Clone)]
pub struct Network {
    from: u64,
}

impl RaftNetworkFactory<KvConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            from: self.from,
            target,
            addr: node.addr.clone(),
            conn: None,
        }
    }
}

type Conn = (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    BufWriter<tokio::net::tcp::OwnedWriteHalf>,
);

/// A connection to one peer, opened lazily and dropped on any error.
#[derive(Debug)]
pub struct Peer {
    from: u64,
    target: u64,
    addr: String,
    conn: Option<Conn>,
}

/// A peer's reply that does not answer the request (a refusal, another kind).
#[derive(Debug, thiserror::Error)]
#[error("node {target}: {what}")]
struct BadReply {
    target: u64,
    what: String,
}

enum CallError {
    Connect(io::Error),
    Io(io::Error),
}

impl Peer {
    async fn call(&mut self, msg: &Message, ttl: Duration) -> Result<Reply, CallError> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let stream = tokio::time::timeout(ttl, TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| CallError::Connect(io::ErrorKind::TimedOut.into()))?
                    .map_err(CallError::Connect)?;
                let _ = stream.set_nodelay(true);
                let (r, w) = stream.into_split();
                (BufReader::new(r), BufWriter::new(w))
            }
        };
        let (mut r, mut w) = conn;
        let exchange = async {
            write_frame(&mut w, msg).await?;
            read_frame::<_, Reply>(&mut r)
                .await?
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        };
        let reply = tokio::time::timeout(ttl, exchange)
            .await
            .map_err(|_| CallError::Io(io::ErrorKind::TimedOut.into()))?
            .map_err(CallError::Io)?;
        self.conn = Some((r, w));
        Ok(reply)
    }

    fn bad<E: std::error::Error>(&self, reply: Reply) -> RPCError<u64, BasicNode, E> {
        let what = match reply {
            Reply::Rejected { reason } => format!("refused: {reason}"),
            other => format!("unexpected reply {other:?}"),
        };
        RPCError::Network(NetworkError::new(&BadReply {
            target: self.target,
            what,
        }))
    }
}

fn transport<E: std::error::Error>(e: CallError) -> RPCError<u64, BasicNode, E> {
    match e {
        CallError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Io(e) => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetwork<KvConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let msg = Message::AppendEntries { from: self.from, rpc };
        match self.call(&msg, option.hard_ttl()).await.map_err(transport)? {
            Reply::AppendEntries(Ok(r)) => Ok(r),
            Reply::AppendEntries(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.bad(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KvConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, openraft::error::InstallSnapshotError>>,
    > {
        let msg = Message::InstallSnapshot { from: self.from, rpc };
        match self.call(&msg, option.hard_ttl()).await.map_err(transport)? {
            Reply::InstallSnapshot(Ok(r)) => Ok(r),
            Reply::InstallSnapshot(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.bad(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let msg = Message::Vote { from: self.from, rpc };
        match self.call(&msg, option.hard_ttl()).await.map_err(transport)? {
            Reply::Vote(Ok(r)) => Ok(r),
            Reply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.bad(other)),
        }
    }
}
