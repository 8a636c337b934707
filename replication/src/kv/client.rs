//! A `ptm-kv` client: sends [`ClientRequest`]s, follows the leader's address when a node
//! redirects, and retries on unreachable nodes until its deadline.

use std::io;
use std::time::Duration;

use tokio::io::{BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::proto::{read_frame, write_frame, ClientError, ClientReply, ClientRequest, Message, Reply};

/// Why a client request did not get an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientFailure {
    /// No node answered (or every answer was a redirect) before the deadline.
    #[error("no answer within {waited:?} after {attempts} attempts; last error: {last}")]
    Timeout {
        /// How long it tried.
        waited: Duration,
        /// Requests sent.
        attempts: u32,
        /// The last error seen.
        last: String,
    },
    /// A node answered with an error other than a redirect.
    #[error(transparent)]
    Refused(#[from] ClientError),
    /// A node answered with a reply of the wrong kind.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// One connection to one node.
#[derive(Debug)]
pub struct Connection {
    r: BufReader<OwnedReadHalf>,
    w: BufWriter<OwnedWriteHalf>,
}

impl Connection {
    /// Connects to `addr`.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub async fn connect(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Self {
            r: BufReader::new(r),
            w: BufWriter::new(w),
        })
    }

    /// Sends `msg` and waits for the reply.
    ///
    /// # Errors
    ///
    /// I/O errors; `UnexpectedEof` when the node closed the connection.
    pub async fn request(&mut self, msg: &Message) -> io::Result<Reply> {
        write_frame(&mut self.w, msg).await?;
        read_frame(&mut self.r)
            .await?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }
}

/// A client of a cluster: knows the nodes' addresses, remembers the leader.
#[derive(Debug)]
pub struct Client {
    nodes: Vec<String>,
    leader: Option<String>,
    conn: Option<(String, Connection)>,
    next: usize,
    /// How long one request may take, retries included (default 10 s).
    pub timeout: Duration,
}

impl Client {
    /// A client of the cluster whose nodes listen on `nodes` (one is enough; more let it go
    /// on when that one is down).
    pub fn new(nodes: Vec<String>) -> Self {
        Self {
            nodes,
            leader: None,
            conn: None,
            next: 0,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sends `req` to the leader (found by redirects), retrying on connection errors and
    /// elections until [`timeout`](Client::timeout). A write that timed out may still have been
    /// applied.
    ///
    /// # Errors
    ///
    /// [`ClientFailure`].
    pub async fn call(&mut self, req: ClientRequest) -> Result<ClientReply, ClientFailure> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut attempts = 0;
        let mut last = String::from("none");
        while Instant::now() < deadline && !self.nodes.is_empty() {
            attempts += 1;
            let target = match &self.leader {
                Some(l) => l.clone(),
                None => {
                    self.next = (self.next + 1) % self.nodes.len();
                    self.nodes[self.next].clone()
                }
            };
            let msg = Message::Client(req.clone());
            let sent = tokio::time::timeout_at(deadline, self.send(&target, &msg)).await;
            match sent {
                Ok(Ok(Reply::Client(Ok(reply)))) => {
                    self.leader = Some(target);
                    return Ok(reply);
                }
                Ok(Ok(Reply::Client(Err(ClientError::NotLeader { addr, leader })))) => {
                    last = format!("{target}: not the leader (leader {leader:?} at {addr:?})");
                    let moved = addr.is_some() && addr.as_deref() != Some(target.as_str());
                    self.leader = addr.filter(|_| moved);
                    if !moved {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(Ok(Reply::Client(Err(e)))) => return Err(e.into()),
                Ok(Ok(other)) => return Err(ClientFailure::Unexpected(format!("{other:?}"))),
                Ok(Err(e)) => {
                    last = format!("{target}: {e}");
                    self.conn = None;
                    self.leader = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => {
                    last = format!("{target}: no reply before the deadline");
                    self.conn = None;
                }
            }
        }
        Err(ClientFailure::Timeout {
            waited: started.elapsed(),
            attempts,
            last,
        })
    }

    /// Sends `msg` to the node at `addr` (no redirect, no retry).
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub async fn send(&mut self, addr: &str, msg: &Message) -> io::Result<Reply> {
        let mut conn = match self.conn.take() {
            Some((a, c)) if a == addr => c,
            _ => Connection::connect(addr).await?,
        };
        let reply = conn.request(msg).await?;
        self.conn = Some((addr.to_string(), conn));
        Ok(reply)
    }
}
