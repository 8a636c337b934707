//! The `ptm` command-line tool: create, inspect and check ptm pools; demonstrate and explore
//! crash consistency.
//!
//! Every failure prints one line `ptm: error: <message>` on stderr and exits non-zero: 2 for
//! usage errors (reported by clap), 1 for everything else. The tool never panics on bad input;
//! should a bug panic anyway, the hook below still prints one line and no backtrace.

mod bench;
mod check;
mod crashtest;
mod demo;
mod disk_bench;
mod grow;
mod journal;
mod pause;
mod recovery_bench;
mod report;
mod size;
mod sync_count;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pmem_core::RegionOptions;

/// Create, inspect and check ptm persistent-memory pools.
#[derive(Debug, Parser)]
#[command(name = "ptm", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new pool file (or format a device-DAX node).
    ///
    /// An existing empty file is used; a non-empty one is never overwritten.
    Create {
        /// Where to create the pool.
        path: PathBuf,
        /// Pool size, e.g. 64M, 1G, 16K, 4096 (binary units K/M/G/T, optionally with iB;
        /// a multiple of 4 KiB, at least 16K). On a device-DAX node, 0 takes the whole device.
        #[arg(long, short, value_parser = size::parse_size, value_name = "SIZE")]
        size: u64,
        /// Layout name recorded in the header (at most 63 bytes).
        #[arg(long, value_name = "NAME", default_value = "")]
        layout: String,
        /// Persistence engine for a pool on a regular file: `journaled` (copy-on-write mapping,
        /// changes appended to `<path>.journal`, one fdatasync per commit), `msync` (shared
        /// mapping, msync at every ordering point), `pmem` (treat the file as persistent memory:
        /// cache-flush domain, for tmpfs emulation) or `auto` (persistent memory on DAX or when
        /// PTM_FORCE_PMEM=1, journaled otherwise).
        #[arg(long, value_parser = parse_engine, value_name = "ENGINE", default_value = "auto")]
        engine: pmem_core::Engine,
        /// Alias of `--engine pmem` (overrides PTM_FORCE_PMEM).
        #[arg(long)]
        force_pmem: bool,
        /// Size of the root object (bytes) of the transactional pool: an application opens the
        /// pool with a root type of exactly this size.
        #[arg(long, value_parser = size::parse_size, value_name = "SIZE", default_value = "0")]
        root_size: u64,
        /// Number of lanes (concurrent transactions; 64 KiB of undo log each, 8 KiB in pools
        /// under 16 MiB); default: about a sixteenth of the pool, between 1 and 64.
        #[arg(long, value_name = "N")]
        lanes: Option<u32>,
    },
    /// Open a pool and print its header, mapping and persistence domain, what the domain
    /// promises (survives power loss, or only process death), the NVDIMM/CXL region under it
    /// with its unsafe-shutdown count, and what its journal held before the open replayed it
    /// (epoch, records, torn tail, or the damage).
    ///
    /// Opening takes the pool's lock, and rewrites a damaged backup header from an intact
    /// primary (as every open does); use `ptm check` to inspect without changing anything.
    Info {
        /// The pool.
        path: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Treat the file as persistent memory (cache-flush domain) even if it is not on DAX
        /// (overrides PTM_FORCE_PMEM).
        #[arg(long)]
        force_pmem: bool,
    },
    /// Grow a closed pool in place to a larger size: data and offsets stay, the new space is
    /// free heap.
    ///
    /// Opens the pool first (recovery runs, a journal is replayed) and closes it cleanly; a
    /// crash during the grow leaves the old or the new size. Refused for device-DAX nodes, and
    /// beyond the size the pool's chunk table was made for (64 times the size at creation, at
    /// least 1 GiB).
    Grow {
        /// The pool.
        path: PathBuf,
        /// The new size (larger than the pool), e.g. 64M, 1G.
        #[arg(long, short, value_parser = size::parse_size, value_name = "SIZE")]
        size: u64,
        /// Treat the file as persistent memory (cache-flush domain) even if it is not on DAX
        /// (overrides PTM_FORCE_PMEM).
        #[arg(long)]
        force_pmem: bool,
    },
    /// Check both header copies of a pool and its journal, optionally repair them, then open it.
    ///
    /// A journal is damaged when a record that had been synced no longer checks out (a torn
    /// record at its end is a crash, not damage). A pool on persistent memory whose device
    /// counted an unsafe shutdown while the pool was in use is refused until
    /// `--accept-unsafe-shutdown`. Exits 0 when the pool is intact (or was repaired) and opens,
    /// 1 when damage is found and not repaired.
    ///
    /// Once the pool opens, the collections its root reaches are walked from the root schema
    /// the pool records (counts, lengths, directories, B-tree order, every pointer inside the
    /// heap, no block owned twice): a corrupt collection is reported with its schema path
    /// (`Root.tasks<V>.title`) and exits 1. Allocated blocks the walk does not reach are
    /// reported as unreachable from the schema (leaked, or reached only through data the schema
    /// cannot describe); that alone does not change the exit status.
    Check {
        /// The pool.
        path: PathBuf,
        /// Restore a damaged header copy from the intact one; replay a corrupt journal's valid
        /// prefix and drop the damaged record and every record after it (their transactions
        /// are lost).
        #[arg(long)]
        repair: bool,
        /// When the pool is refused because its device (NVDIMM, CXL memory) counted an unsafe
        /// shutdown while the pool was in use: open it anyway, verify the transaction layer
        /// (superblock, undo logs, heap metadata), and if it verifies record the device's
        /// current count as the pool's clean state so that it opens again. ptm cannot verify
        /// the application's own data; check that first.
        #[arg(long)]
        accept_unsafe_shutdown: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show crash consistency: a child process runs persistent hash-map transactions and is
    /// killed with SIGKILL after a random amount of its own CPU time, again and again; after
    /// each kill the pool is reopened (recovery runs) and checked. Prints a table, counting the
    /// kills that landed mid-transaction and how each was resolved; exits 1 if any invariant
    /// fails.
    Demo {
        /// Directory for the temporary pool (default: /dev/shm treated as persistent memory
        /// when present, else the system temp dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Use a file in the disk temp dir (journaled engine) instead of tmpfs.
        #[arg(long)]
        disk: bool,
        /// How many times to kill the child.
        #[arg(long, default_value = "5", value_name = "N")]
        kills: u32,
        /// Seed of the workload and of the CPU time before each kill (printed; replays the
        /// workload, while where each kill lands depends on the kernel's tick).
        #[arg(long, value_name = "S")]
        seed: Option<u64>,
        /// The child kills itself inside a transaction, after its stores and before its
        /// commit, instead of being killed at a random moment (tests the mid-transaction path
        /// deterministically).
        #[arg(long, hide = true)]
        kill_self: bool,
    },
    /// Run the crash-recovery harness on built-in workloads (bank transfers, a persistent
    /// vector and hash map): every drain is a possible power failure, and the pool images it
    /// could leave are recovered and checked. Prints a table; exits 1 on any failure.
    Crashtest {
        /// Multiply the exploration budgets and random images per crash point.
        #[arg(long, default_value = "1", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        scale: u32,
        /// Print one JSON object instead of the table (and no progress).
        #[arg(long)]
        json: bool,
    },
    /// Measure durable 1-word and 8-word updates side by side: ptm, PMDK (with the `pmdk`
    /// feature), SQLite (WAL, synchronous=FULL) and write+fsync, plus ptm's drains per update;
    /// or, with --pauses, the latency distribution of inserts into growing collections; or,
    /// with --disk DIR, ptm's disk engines against SQLite, LMDB and redb on a real disk.
    Bench {
        /// Fewer iterations (a few seconds; for tests and CI).
        #[arg(long)]
        quick: bool,
        /// Print one JSON object instead of the table (and no progress).
        #[arg(long)]
        json: bool,
        /// Directory for the pools and files (default: /dev/shm when present, else the system
        /// temp dir); pools are treated as persistent memory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Measure growth pauses instead: the latency of every insert (each its own durable
        /// transaction) into ptm's PHashMap, PBTreeMap, PVec and PQueue, PMDK's hash map (with
        /// the `pmdk` feature) and std's HashMap, BTreeMap and Vec; percentiles, the worst
        /// operation and when it happened, and how many inserts grew the structure.
        #[arg(long, group = "mode")]
        pauses: bool,
        /// Compare ptm's disk engines (plain file with msync, nvme-backing's paged memory) with
        /// SQLite, LMDB and redb: durable 1-word, 8-word and 4-thread updates, with the fsync,
        /// fdatasync and msync calls per transaction, in a fresh directory inside DIR (which must
        /// exist, on a real disk rather than tmpfs).
        #[arg(long, value_name = "DIR", group = "mode", conflicts_with_all = ["dir", "quick"])]
        disk: Option<PathBuf>,
        /// Inserts per structure for --pauses (default 2000000; 20000 with --quick), or
        /// transactions per round for --disk (default 300).
        #[arg(long, value_name = "N", requires = "mode",
              value_parser = clap::value_parser!(u64).range(1..=pause::MAX_OPS))]
        ops: Option<u64>,
        /// Timed rounds for --disk (default 9); each case reports its median round.
        #[arg(long, value_name = "N", requires = "disk",
              value_parser = clap::value_parser!(u64).range(1..=1000))]
        rounds: Option<u64>,
    },
    /// The demo's child process (internal).
    #[command(hide = true)]
    DemoChild {
        /// The pool.
        path: PathBuf,
        /// Workload seed.
        #[arg(long)]
        seed: u64,
        /// Open as persistent memory.
        #[arg(long)]
        force_pmem: bool,
        /// Send itself SIGKILL inside transaction N + 1 (counting from the open), after its
        /// stores and before its commit.
        #[arg(long, value_name = "N")]
        kill_self_after: Option<u64>,
        /// Arm a timer that sends SIGKILL once the workload has used N microseconds of CPU time.
        #[arg(long, value_name = "N")]
        kill_after_cpu_us: Option<u64>,
    },
}

/// An operational failure: the message for `ptm: error:`.
#[derive(Debug)]
struct Failure(String);

impl From<pmem_core::Error> for Failure {
    fn from(e: pmem_core::Error) -> Self {
        Failure(e.to_string())
    }
}

/// Writes `text` to stdout; a closed pipe or full disk is a failure, not a panic.
fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure(format!("writing output: {e}")))
}

fn emit_json(v: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure(format!("encoding JSON: {e}")))?;
    emit(&(text + "\n"))
}

/// Options for the tools that open a pool to look at it (`info`, `check`). With `force_pmem`
/// (or `PTM_FORCE_PMEM=1`), or when the pool has a journal file, the pool opens as usual (the
/// journal is replayed and stays the pool's journal); otherwise on the msync engine, so looking
/// at a pool never leaves a journal file beside it. (A pool on DAX persistent memory opens on the
/// pmem engine either way.)
pub(crate) fn tool_options(path: &Path, force_pmem: bool) -> RegionOptions {
    let opts = RegionOptions::new();
    if force_pmem {
        return opts.force_pmem(true);
    }
    let forced_by_env = std::env::var(pmem_core::ENV_FORCE_PMEM).is_ok_and(|v| v == "1");
    if forced_by_env || pmem_core::internals::journal::default_journal_path(path).exists() {
        opts
    } else {
        opts.engine(pmem_core::Engine::Msync)
    }
}

/// Parses `--engine`: `auto`, `pmem`, `journaled` or `msync`.
fn parse_engine(s: &str) -> Result<pmem_core::Engine, String> {
    pmem_core::Engine::from_name(s)
        .ok_or_else(|| format!("unknown engine {s:?} (expected auto, pmem, journaled or msync)"))
}

fn create(
    path: &Path,
    size: u64,
    layout: &str,
    engine: pmem_core::Engine,
    force_pmem: bool,
    root_size: u64,
    lanes: Option<u32>,
) -> Result<(), Failure> {
    // Small pools get small lanes (transactions overflow into the heap anyway).
    let lane_size = if size >= 16 << 20 {
        ptm::DEFAULT_LANE_SIZE
    } else {
        8 << 10
    };
    let lanes = lanes.unwrap_or_else(|| (size / 16 / lane_size).clamp(1, 64) as u32);
    let mut opts = ptm::PoolOptions::new()
        .layout(layout)
        .lanes(lanes)
        .lane_size(lane_size);
    if force_pmem && !matches!(engine, pmem_core::Engine::Auto | pmem_core::Engine::Pmem) {
        return Err(Failure(format!(
            "--force-pmem is an alias of --engine pmem and contradicts --engine {}",
            engine.name()
        )));
    }
    if force_pmem || engine == pmem_core::Engine::Pmem {
        opts = opts.force_pmem(true).engine(pmem_core::Engine::Pmem);
    } else {
        opts = opts.engine(engine);
    }
    // pmem-core validates before it touches the file and removes what it made on failure.
    let pool =
        ptm::Pool::<()>::create_any(path, size, root_size, &opts).map_err(|e| Failure(e.to_string()))?;
    let summary = ptm::inspect(pool.region()).map_err(|e| Failure(e.to_string()))?;
    emit(&(report::created_text(pool.region()) + &report::txn_text(&summary)))
}

fn info(path: &Path, json: bool, force_pmem: bool) -> Result<(), Failure> {
    // The journal first: opening replays it and starts a new epoch.
    let jinfo = journal::inspect(path)?;
    let region = match tool_options(path, force_pmem).open(path) {
        Ok(r) => r,
        Err(e) => {
            // Show what the journal holds when it is why the pool does not open.
            if let Some(j) = jinfo.as_ref().filter(|j| j.is_damaged()) {
                if json {
                    emit_json(&serde_json::json!({
                        "path": path.to_string_lossy(),
                        "journal": j.json(),
                        "open_error": e.to_string(),
                    }))?;
                } else {
                    let mut t = report::Table::default();
                    t.row("pool", path.display());
                    j.rows(&mut t);
                    emit(&t.into_string())?;
                }
            }
            return Err(e.into());
        }
    };
    // Read-only: no recovery runs. A bare pmem-core pool has no transaction layer.
    let txn = check::txn_layer(&region).map_err(|e| Failure(e.to_string()))?;
    // The root type's schema as the pool records it (only with a transaction layer). A damaged
    // record is shown, not fatal: `info` is how one looks at a damaged pool.
    let schema = txn
        .as_ref()
        .map(|_| ptm::read_root_schema(&region).map_err(|e| e.to_string()));
    if json {
        let mut v = report::info_json(&region);
        v["transactions"] = txn.as_ref().map_or(serde_json::Value::Null, report::txn_json);
        v["schema"] = schema.as_ref().map_or(serde_json::Value::Null, schema_json);
        v["journal"] = jinfo
            .as_ref()
            .map_or(serde_json::Value::Null, journal::JournalInfo::json);
        emit_json(&v)
    } else {
        let mut extra = String::new();
        if let Some(j) = &jinfo {
            let mut t = report::Table::default();
            j.rows(&mut t);
            extra.push_str(&t.into_string());
        }
        extra += &txn.as_ref().map_or_else(
            || "transactions    none (bare pmem-core pool)\n".to_owned(),
            report::txn_text,
        );
        if let Some(schema) = &schema {
            extra += &schema_text(schema);
        }
        emit(&(report::info_text(&region) + &extra))
    }
}

/// `ptm info`'s lines on the recorded root schema: its fingerprint, then one line per field.
fn schema_text(schema: &Result<ptm::RootSchema, String>) -> String {
    let schema = match schema {
        Ok(s) => s,
        Err(e) => return format!("root schema     damaged: {e}\n"),
    };
    match schema {
        ptm::RootSchema::NotRecorded => {
            "root schema     not recorded (recorded at the next open by a program)\n".to_owned()
        }
        ptm::RootSchema::Fingerprint(f) => {
            format!("root schema     fingerprint {f:#018x} (too long to keep the description)\n")
        }
        ptm::RootSchema::Described(s) => {
            let mut out = format!("root schema     fingerprint {:#018x}\n", s.fingerprint());
            for line in s.render().lines() {
                out += &format!("  {line}\n");
            }
            out
        }
    }
}

/// `ptm info --json`'s `schema` object.
fn schema_json(schema: &Result<ptm::RootSchema, String>) -> serde_json::Value {
    let schema = match schema {
        Ok(s) => s,
        Err(e) => return serde_json::json!({ "recorded": true, "damaged": e }),
    };
    match schema {
        ptm::RootSchema::NotRecorded => serde_json::json!({ "recorded": false }),
        ptm::RootSchema::Fingerprint(f) => serde_json::json!({
            "recorded": true,
            "fingerprint": format!("{f:#018x}"),
            "encoding": serde_json::Value::Null,
        }),
        ptm::RootSchema::Described(s) => serde_json::json!({
            "recorded": true,
            "fingerprint": format!("{:#018x}", s.fingerprint()),
            "encoding": s.encode(),
        }),
    }
}

fn check(path: &Path, repair: bool, accept_unsafe_shutdown: bool, json: bool) -> Result<(), Failure> {
    let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let outcome = check::run(path, repair, accept_unsafe_shutdown, progress)?;
    if json {
        emit_json(&report::check_json(path, &outcome))?;
    } else {
        emit(&report::check_text(path, &outcome))?;
    }
    match outcome.error_message(path) {
        Some(msg) => Err(Failure(msg)),
        None => Ok(()),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Create {
            path,
            size,
            layout,
            engine,
            force_pmem,
            root_size,
            lanes,
        } => create(&path, size, &layout, engine, force_pmem, root_size, lanes),
        Command::Info {
            path,
            json,
            force_pmem,
        } => info(&path, json, force_pmem),
        Command::Check {
            path,
            repair,
            accept_unsafe_shutdown,
            json,
        } => check(&path, repair, accept_unsafe_shutdown, json),
        Command::Grow {
            path,
            size,
            force_pmem,
        } => emit(&grow::run(&path, size, force_pmem)?),
        Command::Demo {
            dir,
            disk,
            kills,
            seed,
            kill_self,
        } => emit(&demo::run(demo::DemoArgs {
            dir,
            kills,
            seed,
            disk,
            kill_self,
        })?),
        Command::Crashtest { scale, json } => {
            let (text, failures) = crashtest::run(scale, json)?;
            emit(&text)?;
            if failures > 0 {
                return Err(Failure(format!("crashtest: {failures} failing images")));
            }
            Ok(())
        }
        Command::Bench {
            quick,
            json,
            dir,
            pauses,
            disk,
            ops,
            rounds,
        } => emit(&bench::run(&bench::BenchArgs {
            quick,
            json,
            dir,
            pauses,
            ops,
            disk,
            rounds: rounds.map(|r| r as usize),
        })?),
        Command::DemoChild {
            path,
            seed,
            force_pmem,
            kill_self_after,
            kill_after_cpu_us,
        } => demo::child(&path, seed, force_pmem, kill_self_after, kill_after_cpu_us),
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info.location().map_or_else(|| "?".into(), |l| l.to_string());
        // One line, no backtrace; it says "panicked" so tests and bug reports can tell.
        let _ = writeln!(
            std::io::stderr(),
            "ptm: error: internal error (panicked at {at}): {msg}"
        );
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            let _ = writeln!(std::io::stderr(), "ptm: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
