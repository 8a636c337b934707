//! A `ptm-kv` cluster of real processes on 127.0.0.1: the leader SIGKILLed in the middle of
//! writes, a new leader, every acknowledged write on the survivors, the killed node restarted
//! from its pool and caught up, a fourth node joining through a snapshot, a node removed (and its
//! messages refused), then a follower killed over and over. Nothing acknowledged may be lost.
//!
//! Sizes scale with `PTM_RAFT_TEST_KEYS` (keys of the first phase, default 1500; the issue's
//! full run is 10000) and `PTM_RAFT_TEST_KILLS` (follower kills, default 4; full run 20).
//! Pools are files on /dev/shm treated as pmem (`--force-pmem`), or on the journaled disk engine
//! in a temporary directory with `PTM_RAFT_TEST_DISK=1`. Every wait is bounded: a node that does
//! not catch up fails the test with what is missing.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::raft::VoteRequest;
use openraft::Vote;
use ptm_raft::kv::client::{Client, ClientFailure};
use ptm_raft::kv::proto::{ClientReply, ClientRequest, Message, NodeStatus, Reply};
use tokio::time::{sleep, Instant};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

struct Cluster {
    dir: tempfile::TempDir,
    disk: bool,
    snapshot_every: usize,
    addrs: BTreeMap<u64, String>,
    procs: BTreeMap<u64, Child>,
    /// Pool sizes in MiB other than the default 64.
    pool_mib: BTreeMap<u64, u64>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.procs.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn new(snapshot_every: usize) -> Self {
        let disk = std::env::var("PTM_RAFT_TEST_DISK").is_ok_and(|v| v == "1");
        let dir = if disk {
            tempfile::tempdir().expect("tempdir")
        } else {
            tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm")
        };
        Self {
            dir,
            disk,
            snapshot_every,
            addrs: BTreeMap::new(),
            procs: BTreeMap::new(),
            pool_mib: BTreeMap::new(),
        }
    }

    fn addr(&mut self, id: u64) -> String {
        self.addrs
            .entry(id)
            .or_insert_with(|| format!("127.0.0.1:{}", free_port()))
            .clone()
    }

    fn pool(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}.pool"))
    }

    /// Starts node `id` (from its pool if it exists) and waits until it answers.
    async fn start(&mut self, id: u64) {
        let addr = self.addr(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.log")))
            .expect("node log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptm-kv"));
        cmd.args(["--id", &id.to_string(), "--addr", &addr])
            .arg("--pool")
            .arg(self.pool(id))
            .args([
                "--pool-size-mib",
                &self.pool_mib.get(&id).unwrap_or(&64).to_string(),
            ])
            .args(["--snapshot-every", &self.snapshot_every.to_string()])
            .stdout(Stdio::null())
            .stderr(log);
        if !self.disk {
            cmd.arg("--force-pmem");
        }
        let child = cmd.spawn().expect("spawn ptm-kv");
        self.procs.insert(id, child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.status(id).await.is_some() {
                return;
            }
            if let Some(status) = self.procs.get_mut(&id).and_then(|c| c.try_wait().ok().flatten()) {
                panic!("node {id} exited with {status}: {}", self.log(id));
            }
            sleep(Duration::from_millis(50)).await;
        }
        panic!("node {id} did not answer within 20 s: {}", self.log(id));
    }

    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// SIGKILL.
    fn kill(&mut self, id: u64) {
        let mut child = self.procs.remove(&id).expect("a running node");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    async fn raw(&self, id: u64, msg: Message) -> Option<Reply> {
        let addr = self.addrs.get(&id)?.clone();
        let mut c = Client::new(vec![addr.clone()]);
        tokio::time::timeout(Duration::from_secs(2), c.send(&addr, &msg))
            .await
            .ok()?
            .ok()
    }

    async fn status(&self, id: u64) -> Option<NodeStatus> {
        match self.raw(id, Message::Client(ClientRequest::Status)).await? {
            Reply::Client(Ok(ClientReply::Status(s))) => Some(s),
            _ => None,
        }
    }

    async fn dump(&self, id: u64) -> Option<BTreeMap<String, String>> {
        match self.raw(id, Message::Client(ClientRequest::LocalDump)).await? {
            Reply::Client(Ok(ClientReply::Entries(e))) => Some(e.into_iter().collect()),
            _ => None,
        }
    }

    fn client(&self) -> Client {
        Client::new(self.procs.keys().map(|id| self.addrs[id].clone()).collect())
    }

    /// The leader as seen by the running nodes, once they agree (bounded wait).
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut statuses = Vec::new();
        while Instant::now() < deadline {
            statuses.clear();
            for &id in self.procs.keys() {
                statuses.push((id, self.status(id).await));
            }
            let seen: Vec<Option<u64>> = statuses
                .iter()
                .map(|(_, s)| s.as_ref().and_then(|s| s.leader))
                .collect();
            if let Some(Some(l)) = seen.first().copied() {
                if self.procs.contains_key(&l) && seen.iter().all(|s| *s == Some(l)) {
                    return l;
                }
            }
            sleep(Duration::from_millis(100)).await;
        }
        let logs: Vec<String> = self
            .procs
            .keys()
            .map(|&id| format!("node {id}: {}", self.log(id)))
            .collect();
        panic!("no agreed leader within 30 s: {statuses:?}; logs: {logs:?}");
    }

    async fn call(&self, req: ClientRequest) -> Result<ClientReply, ClientFailure> {
        let mut c = self.client();
        c.timeout = Duration::from_secs(30);
        c.call(req).await
    }

    /// Waits until node `id`'s applied state holds every acknowledged write.
    async fn wait_has_all(&self, id: u64, acked: &BTreeMap<String, String>) {
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut missing = Vec::new();
        while Instant::now() < deadline {
            if let Some(state) = self.dump(id).await {
                missing = acked
                    .iter()
                    .filter(|(k, v)| state.get(*k) != Some(v))
                    .collect::<Vec<_>>();
                if missing.is_empty() {
                    return;
                }
            }
            sleep(Duration::from_millis(200)).await;
        }
        let mut statuses = Vec::new();
        for &n in self.procs.keys() {
            statuses.push(self.status(n).await);
        }
        panic!(
            "node {id} still misses {} of {} acknowledged writes after 45 s (first {:?}, last {:?}); \
             statuses {statuses:?}; log: {}",
            missing.len(),
            acked.len(),
            missing.first(),
            missing.last(),
            self.log(id)
        );
    }
}

/// Writes `keys` with `clients` concurrent clients until done or `stop` is set; returns the
/// acknowledged writes. `progress` counts acknowledgements.
async fn write_keys(
    nodes: Vec<String>,
    keys: Vec<String>,
    tag: &'static str,
    clients: usize,
    progress: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> BTreeMap<String, String> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let keys = Arc::new(keys);
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let (nodes, keys, acked, progress, stop) = (
            nodes.clone(),
            keys.clone(),
            acked.clone(),
            progress.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(nodes);
            client.timeout = Duration::from_secs(20);
            for key in keys.iter().skip(worker).step_by(clients) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let value = format!("{key}-{tag}");
                let req = ClientRequest::Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                // An unacknowledged write (timed out across an election) may or may not be
                // applied: only acknowledged ones are checked.
                if let Ok(ClientReply::Written { .. }) = client.call(req).await {
                    acked.lock().unwrap().insert(key.clone(), value);
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

async fn wait_progress(progress: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "writes stalled at {}",
            progress.load(Ordering::Relaxed)
        );
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_kills_joins_and_removals() {
    let keys = env_count("PTM_RAFT_TEST_KEYS", 1500);
    let kills = env_count("PTM_RAFT_TEST_KILLS", 4);
    let mut cluster = Cluster::new((keys / 4).max(50));
    for id in 1..=3 {
        cluster.start(id).await;
    }
    let members: BTreeMap<u64, String> = (1..=3).map(|id| (id, cluster.addrs[&id].clone())).collect();
    let init = cluster
        .raw(1, Message::Client(ClientRequest::Init { members }))
        .await;
    assert!(
        matches!(init, Some(Reply::Client(Ok(ClientReply::Done)))),
        "init: {init:?}"
    );
    let first_leader = cluster.leader().await;

    // 1-3. Write keys; SIGKILL the leader a third of the way; writes continue under a new one.
    let nodes: Vec<String> = cluster.addrs.values().cloned().collect();
    let progress = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = (0..keys).map(|i| format!("k{i:06}")).collect();
    let writer = tokio::spawn(write_keys(nodes, names, "a", 8, progress.clone(), stop.clone()));
    wait_progress(&progress, keys / 3).await;
    cluster.kill(first_leader);
    let acked_at_kill = progress.load(Ordering::Relaxed);
    let mut acked = writer.await.expect("writer");
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, first_leader, "a new leader is elected");
    assert!(
        acked.len() > acked_at_kill,
        "writes continue after the leader's death ({} acknowledged, {acked_at_kill} at the kill)",
        acked.len()
    );
    assert!(
        acked.len() * 10 >= keys * 9,
        "only {} of {keys} writes acknowledged",
        acked.len()
    );

    // 4. Every acknowledged write is on both survivors.
    let survivors: Vec<u64> = cluster.procs.keys().copied().collect();
    for &id in &survivors {
        cluster.wait_has_all(id, &acked).await;
    }

    // 5. The killed node restarts from its pool and catches up.
    cluster.start(first_leader).await;
    cluster.wait_has_all(first_leader, &acked).await;

    // 6. A fourth node joins; the leader's log was purged past a snapshot, so it gets one.
    cluster.start(4).await;
    let addr4 = cluster.addrs[&4].clone();
    let added = cluster.call(ClientRequest::AddNode { id: 4, addr: addr4 }).await;
    assert!(matches!(added, Ok(ClientReply::Done)), "add node 4: {added:?}");
    cluster.wait_has_all(4, &acked).await;
    let s4 = cluster.status(4).await.expect("node 4 status");
    assert!(
        s4.snapshots_installed >= 1,
        "node 4 joined without a snapshot: {s4:?}"
    );
    assert!(s4.voters.contains(&4), "node 4 is a voter: {s4:?}");

    // ... and a node (a follower) is removed; its messages are then refused.
    let leader = cluster.leader().await;
    let removed = (1..=3).find(|&id| id != leader).expect("a follower");
    let r = cluster.call(ClientRequest::RemoveNode { id: removed }).await;
    assert!(matches!(r, Ok(ClientReply::Done)), "remove node {removed}: {r:?}");
    let s = cluster.status(leader).await.expect("leader status");
    assert!(
        !s.voters.contains(&removed) && !s.learners.contains(&removed),
        "{s:?}"
    );
    let vote = VoteRequest::new(Vote::new(s.term + 1, removed), None);
    let reply = cluster
        .raw(
            leader,
            Message::Vote {
                from: removed,
                rpc: vote,
            },
        )
        .await;
    assert!(
        matches!(reply, Some(Reply::Rejected { .. })),
        "vote from a removed node: {reply:?}"
    );
    let vote = VoteRequest::new(Vote::new(s.term + 1, 99), None);
    let reply = cluster.raw(leader, Message::Vote { from: 99, rpc: vote }).await;
    assert!(
        matches!(reply, Some(Reply::Rejected { .. })),
        "vote from a stranger: {reply:?}"
    );
    cluster.kill(removed);

    // Then a follower is killed again and again while writes go on.
    let nodes: Vec<String> = cluster.procs.keys().map(|id| cluster.addrs[id].clone()).collect();
    let per_kill = (keys / 10).max(50);
    let progress = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = (0..per_kill * (kills + 1)).map(|i| format!("f{i:06}")).collect();
    let writer = tokio::spawn(write_keys(nodes, names, "b", 4, progress.clone(), stop.clone()));
    let mut victims = Vec::new();
    for round in 0..kills {
        let leader = cluster.leader().await;
        let victim = *cluster
            .procs
            .keys()
            .find(|&&id| id != leader)
            .expect("a follower");
        wait_progress(&progress, per_kill * round + per_kill / 2).await;
        cluster.kill(victim);
        wait_progress(&progress, per_kill * (round + 1)).await;
        cluster.start(victim).await;
        victims.push(victim);
    }
    let acked_b = writer.await.expect("writer");
    assert!(
        acked_b.len() * 10 >= per_kill * (kills + 1) * 9,
        "only {} writes acknowledged",
        acked_b.len()
    );
    acked.extend(acked_b);
    let running: Vec<u64> = cluster.procs.keys().copied().collect();
    for id in running {
        cluster.wait_has_all(id, &acked).await;
        let s = cluster.status(id).await.expect("status");
        assert_eq!(s.stopped, None, "node {id} stopped: {s:?}");
    }
    eprintln!(
        "cluster: {} acknowledged writes, leader {first_leader} killed, follower kills {victims:?}",
        acked.len()
    );
}

/// A follower whose pool fills up reports it to openraft as a storage error: its Raft stops
/// (and says why), the two others go on, and every acknowledged write is on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_stops_its_node_and_the_others_go_on() {
    // No snapshots: the log and the state both grow until node 3's 8 MiB pool is full.
    let mut cluster = Cluster::new(1_000_000);
    cluster.pool_mib.insert(3, 8);
    for id in 1..=3 {
        cluster.start(id).await;
    }
    let members: BTreeMap<u64, String> = (1..=3).map(|id| (id, cluster.addrs[&id].clone())).collect();
    let init = cluster
        .raw(1, Message::Client(ClientRequest::Init { members }))
        .await;
    assert!(
        matches!(init, Some(Reply::Client(Ok(ClientReply::Done)))),
        "init: {init:?}"
    );
    cluster.leader().await;
    let big = "x".repeat(4 << 10);
    let mut client = cluster.client();
    client.timeout = Duration::from_secs(20);
    let mut acked = BTreeMap::new();
    let mut stopped = None;
    for i in 0..600 {
        let key = format!("big{i:04}");
        let r = client
            .call(ClientRequest::Put {
                key: key.clone(),
                value: big.clone(),
            })
            .await;
        if let Ok(ClientReply::Written { .. }) = r {
            acked.insert(key, big.clone());
        }
        if i % 10 == 9 {
            if let Some(reason) = cluster.status(3).await.and_then(|s| s.stopped) {
                stopped = Some(reason);
                break;
            }
        }
    }
    let Some(reason) = stopped else {
        panic!(
            "node 3 (8 MiB pool) did not stop after 600 puts of 4 KiB ({} acknowledged): {:?}",
            acked.len(),
            cluster.status(3).await
        );
    };
    assert!(
        reason.contains("out of pool space"),
        "node 3 stopped for another reason: {reason}"
    );
    // The others go on: more writes, and everything acknowledged is on both.
    for i in 0..20 {
        let key = format!("after{i}");
        let r = client
            .call(ClientRequest::Put {
                key: key.clone(),
                value: "v".into(),
            })
            .await;
        assert!(
            matches!(r, Ok(ClientReply::Written { .. })),
            "write after node 3 stopped: {r:?}"
        );
        acked.insert(key, "v".into());
    }
    for id in [1, 2] {
        cluster.wait_has_all(id, &acked).await;
    }
}
