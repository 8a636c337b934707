//! Replicated put against a single-node ptm put and against etcd, in one run.
//!
//! `cargo bench -p ptm-raft --bench replicated_put`
//!
//! - **ptm, 1 node**: one transaction per put on a `PBTreeMap<PString, PString>` under a
//!   `PMutex` in a pool on the journaled disk engine (1 and 8 threads; the 8 share `fdatasync`s).
//! - **ptm-kv, 3 nodes**: three `ptm-kv` processes on 127.0.0.1, pools on the journaled disk
//!   engine; 1 and 8 concurrent clients, each put acknowledged after a majority applied it.
//! - **etcd, 3 members** (when `etcd` is installed: `apt-get install etcd-server`): three
//!   members on 127.0.0.1, data on the same disk; puts through its JSON gateway (`/v3/kv/put`)
//!   over keep-alive HTTP/1.1 connections, 1 and 8 concurrent clients.
//!
//! Prints the mean and p50/p99 latency and the throughput of each, and the ratios. Sizes:
//! `PTM_RAFT_BENCH_PUTS` puts per configuration (default 2000). Every loop is bounded; every
//! process started is killed at the end.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptm::{PMutex, Persistent, Pool, PoolOptions};
use ptm_collections::{PBTreeMap, PString};
use ptm_raft::kv::client::Client;
use ptm_raft::kv::proto::{ClientReply, ClientRequest, Message, Reply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone)]
struct Figures {
    name: String,
    clients: usize,
    puts: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn throughput(&self) -> f64 {
        self.puts as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() - 1) as f64 * p) as usize]
    }
    fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Single {
    map: PMutex<PBTreeMap<PString, PString>>,
}

fn ptm_single(dir: &Path, clients: usize, puts: usize) -> Figures {
    let path = dir.join(format!("single-{clients}.pool"));
    let pool = Arc::new(Pool::<Single>::create(&path, 256 << 20, &PoolOptions::new()).unwrap());
    let start = Instant::now();
    let per = puts / clients;
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let (k, v) = (format!("key-{c}-{i:08}"), format!("value-{i}"));
                    let t = Instant::now();
                    pool.transaction(|tx, r| r.map.lock(tx)?.get_or_insert_new(tx, k.as_str())?.set(tx, &v))
                        .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let latencies: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    Figures {
        name: "ptm, 1 node".into(),
        clients,
        puts: per * clients,
        elapsed: start.elapsed(),
        latencies,
    }
}

async fn wait_leader(addrs: &[String]) -> String {
    for _ in 0..300 {
        let mut c = Client::new(addrs.to_vec());
        c.timeout = Duration::from_secs(1);
        if let Ok(ClientReply::Status(s)) = c.call(ClientRequest::Status).await {
            if let Some(l) = s.leader {
                return addrs[(l - 1) as usize].clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader");
}

async fn ptm_kv(dir: &Path, runs: &[(usize, usize)]) -> Vec<Figures> {
    let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut procs = Procs(Vec::new());
    for (i, addr) in addrs.iter().enumerate() {
        procs.0.push(
            Command::new(env!("CARGO_BIN_EXE_ptm-kv"))
                .args(["--id", &(i + 1).to_string(), "--addr", addr])
                .arg("--pool")
                .arg(dir.join(format!("kv{}.pool", i + 1)))
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let members: BTreeMap<u64, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.clone()))
        .collect();
    let mut ok = false;
    for _ in 0..100 {
        let mut c = Client::new(vec![addrs[0].clone()]);
        if let Ok(Reply::Client(Ok(_))) = c
            .send(
                &addrs[0],
                &Message::Client(ClientRequest::Init {
                    members: members.clone(),
                }),
            )
            .await
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "init");
    let leader = wait_leader(&addrs).await;
    let mut out = Vec::new();
    for &(clients, puts) in runs {
        let per = puts / clients;
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let leader = leader.clone();
                tokio::spawn(async move {
                    let mut client = Client::new(vec![leader]);
                    let mut lat = Vec::with_capacity(per);
                    for i in 0..per {
                        let req = ClientRequest::Put {
                            key: format!("key-{clients}-{c}-{i:08}"),
                            value: format!("value-{i}"),
                        };
                        let t = Instant::now();
                        let r = client.call(req).await;
                        assert!(matches!(r, Ok(ClientReply::Written { .. })), "{r:?}");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        out.push(Figures {
            name: "ptm-kv, 3 nodes".into(),
            clients,
            puts: per * clients,
            elapsed: start.elapsed(),
            latencies,
        });
    }
    out
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One keep-alive HTTP/1.1 connection to etcd's JSON gateway.
struct EtcdConn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    host: String,
}

impl EtcdConn {
    async fn connect(addr: &str) -> std::io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(Self {
            r: BufReader::new(r),
            w,
            host: addr.to_string(),
        })
    }

    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.w.write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.r.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut len, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.r.read_line(&mut line).await?;
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.r.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; n + 2]; // data and its CRLF
                self.r.read_exact(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(len, 0);
            self.r.read_exact(&mut body).await?;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

async fn etcd(dir: &Path, runs: &[(usize, usize)]) -> Option<Vec<Figures>> {
    if Command::new("etcd").arg("--version").output().is_err() {
        return None;
    }
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut procs = Procs(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        procs.0.push(
            Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &cluster.join(",")])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("etcd{i}.log"))).ok()?)
                .spawn()
                .ok()?,
        );
    }
    // Find the leader: the member whose status says it leads (puts to it skip a forward).
    let addrs: Vec<String> = ports.iter().map(|(c, _)| format!("127.0.0.1:{c}")).collect();
    let mut leader = None;
    for _ in 0..200 {
        for a in &addrs {
            if let Ok(mut c) = EtcdConn::connect(a).await {
                if let Ok((200, body)) = c.post("/v3/maintenance/status", "{}").await {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let me = v["header"]["member_id"].as_str().map(str::to_owned);
                    if me.is_some() && me == v["leader"].as_str().map(str::to_owned) {
                        leader = Some(a.clone());
                    }
                }
            }
        }
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(leader) = leader else {
        for i in 0..3 {
            let log = std::fs::read_to_string(dir.join(format!("etcd{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            println!("etcd member {i} found no leader; last log lines: {tail:?}");
        }
        return None;
    };
    let mut out = Vec::new();
    for &(clients, puts) in runs {
        let per = puts / clients;
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let leader = leader.clone();
                tokio::spawn(async move {
                    let mut conn = EtcdConn::connect(&leader).await.unwrap();
                    let mut lat = Vec::with_capacity(per);
                    for i in 0..per {
                        let body = format!(
                            r#"{{"key":"{}","value":"{}"}}"#,
                            b64(&format!("key-{clients}-{c}-{i:08}")),
                            b64(&format!("value-{i}"))
                        );
                        let t = Instant::now();
                        let (status, resp) = conn.post("/v3/kv/put", &body).await.unwrap();
                        assert_eq!(status, 200, "{resp}");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        out.push(Figures {
            name: "etcd, 3 members".into(),
            clients,
            puts: per * clients,
            elapsed: start.elapsed(),
            latencies,
        });
    }
    Some(out)
}

fn main() {
    let puts: usize = std::env::var("PTM_RAFT_BENCH_PUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let runs = [(1, puts), (8, puts)];
    let mut all = Vec::new();
    for &(clients, n) in &runs {
        all.push(ptm_single(dir.path(), clients, n));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    all.extend(rt.block_on(ptm_kv(dir.path(), &runs)));
    match rt.block_on(etcd(dir.path(), &runs)) {
        Some(f) => all.extend(f),
        None => println!("etcd not found or did not start: skipped (apt-get install etcd-server)"),
    }
    println!("| system | clients | puts | mean | p50 | p99 | puts/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for f in &all {
        println!(
            "| {} | {} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.0} |",
            f.name,
            f.clients,
            f.puts,
            f.mean().as_secs_f64() * 1e6,
            f.pct(0.5).as_secs_f64() * 1e6,
            f.pct(0.99).as_secs_f64() * 1e6,
            f.throughput()
        );
    }
    let find = |name: &str, clients| {
        all.iter()
            .find(|f| f.name.starts_with(name) && f.clients == clients)
    };
    for clients in [1, 8] {
        let (Some(kv), Some(single)) = (find("ptm-kv", clients), find("ptm,", clients)) else {
            continue;
        };
        println!(
            "{clients} client(s): ptm-kv 3 nodes / ptm 1 node: throughput {:.3}x, mean latency {:.2}x",
            kv.throughput() / single.throughput(),
            kv.mean().as_secs_f64() / single.mean().as_secs_f64()
        );
        if let Some(e) = find("etcd", clients) {
            println!(
                "{clients} client(s): ptm-kv 3 nodes / etcd 3 members: throughput {:.2}x, mean latency {:.2}x",
                kv.throughput() / e.throughput(),
                kv.mean().as_secs_f64() / e.mean().as_secs_f64()
            );
        }
    }
}
