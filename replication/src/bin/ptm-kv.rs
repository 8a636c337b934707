//! `ptm-kv`: a replicated key-value store on ptm pools and openraft.
//!
//! Run a node: `ptm-kv --id 1 --addr 127.0.0.1:7001 --pool /var/lib/ptm-kv/1.pool`.
//! Form a cluster: `ptm-kv init --node 127.0.0.1:7001 --member 1=127.0.0.1:7001 --member ...`.
//! Use it: `ptm-kv put --node 127.0.0.1:7001 k v`, `get`, `delete`, `add-node`, `remove-node`,
//! `status`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ptm_raft::kv::client::Client;
use ptm_raft::kv::proto::{ClientReply, ClientRequest, Message, Reply};
use ptm_raft::kv::server::{Node, NodeOptions};

#[derive(Parser, Debug)]
#[command(
    name = "ptm-kv",
    version,
    about = "A replicated key-value store on ptm pools (openraft)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// This node's id (unique, not 0).
    #[arg(long)]
    id: Option<u64>,
    /// Address to listen on, and that the other nodes reach this one at.
    #[arg(long)]
    addr: Option<String>,
    /// The node's pool file (created if absent).
    #[arg(long)]
    pool: Option<PathBuf>,
    /// Size of a new pool, in MiB.
    #[arg(long, default_value_t = 256)]
    pool_size_mib: u64,
    /// Treat the pool as persistent memory (a DAX file, or /dev/shm for testing).
    #[arg(long)]
    force_pmem: bool,
    /// Snapshot (and purge the log) every this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Leader heartbeat in milliseconds (elections after 4 to 8 missed heartbeats).
    #[arg(long, default_value_t = 150)]
    heartbeat_ms: u64,
    /// openraft's log messages on stderr from this level up (error, warn, info, debug, trace).
    #[arg(long, default_value = "warn")]
    log_level: tracing_subscriber::filter::LevelFilter,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Form a new cluster: the node at --node becomes its first leader.
    Init {
        /// A node to ask.
        #[arg(long)]
        node: String,
        /// A first member, as ID=ADDR (repeat).
        #[arg(long = "member", value_parser = parse_member)]
        members: Vec<(u64, String)>,
    },
    /// Set a key.
    Put {
        /// Nodes to ask (repeat; the leader is found by redirects).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key (linearizable: through the leader).
    Get {
        /// Nodes to ask.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// The key.
        key: String,
    },
    /// Delete a key.
    Delete {
        /// Nodes to ask.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// The key.
        key: String,
    },
    /// Add a node (it must be running): it catches up as a learner, then votes.
    AddNode {
        /// Nodes to ask.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's address.
        #[arg(long)]
        addr: String,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        /// Nodes to ask.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// The node to remove.
        #[arg(long)]
        id: u64,
    },
    /// Print one node's view of the cluster.
    Status {
        /// The node to ask.
        #[arg(long)]
        node: String,
    },
}

fn parse_member(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=ADDR, got {s:?}"))?;
    let id = id.parse().map_err(|e| format!("node id {id:?}: {e}"))?;
    Ok((id, addr.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ptm-kv: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            None => serve(&cli).await,
            Some(command) => client(command).await,
        }
    })
}

async fn serve(cli: &Cli) -> ExitCode {
    let (Some(id), Some(addr), Some(pool)) = (cli.id, cli.addr.clone(), cli.pool.clone()) else {
        eprintln!("ptm-kv: a node needs --id, --addr and --pool (or give a subcommand: see --help)");
        return ExitCode::from(2);
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(cli.log_level)
        .init();
    if id == 0 {
        eprintln!("ptm-kv: --id must not be 0");
        return ExitCode::from(2);
    }
    let mut opts = NodeOptions::new(id, addr.clone(), pool);
    opts.pool_size = cli.pool_size_mib << 20;
    opts.force_pmem = cli.force_pmem;
    opts.snapshot_every = cli.snapshot_every;
    opts.heartbeat_ms = cli.heartbeat_ms;
    match Node::start(&opts).await {
        Ok((node, listener)) => {
            println!("ptm-kv node {id} listening on {addr}");
            node.serve(listener).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ptm-kv: node {id} refuses to start: {e}");
            ExitCode::from(3)
        }
    }
}

async fn client(command: Command) -> ExitCode {
    let (nodes, req) = match command {
        Command::Status { node } => {
            let mut c = Client::new(vec![node.clone()]);
            return match c.send(&node, &Message::Client(ClientRequest::Status)).await {
                Ok(Reply::Client(Ok(ClientReply::Status(s)))) => {
                    println!("{s:?}");
                    ExitCode::SUCCESS
                }
                Ok(other) => {
                    eprintln!("ptm-kv: {other:?}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("ptm-kv: {node}: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Init { node, members } => {
            let members: BTreeMap<u64, String> = members.into_iter().collect();
            (vec![node], ClientRequest::Init { members })
        }
        Command::Put { nodes, key, value } => (nodes, ClientRequest::Put { key, value }),
        Command::Get { nodes, key } => (nodes, ClientRequest::Get { key }),
        Command::Delete { nodes, key } => (nodes, ClientRequest::Delete { key }),
        Command::AddNode { nodes, id, addr } => (nodes, ClientRequest::AddNode { id, addr }),
        Command::RemoveNode { nodes, id } => (nodes, ClientRequest::RemoveNode { id }),
    };
    match Client::new(nodes).call(req).await {
        Ok(ClientReply::Value(Some(v))) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(ClientReply::Value(None)) => {
            eprintln!("ptm-kv: no such key");
            ExitCode::from(1)
        }
        Ok(reply) => {
            println!("{reply:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ptm-kv: {e}");
            ExitCode::FAILURE
        }
    }
}
