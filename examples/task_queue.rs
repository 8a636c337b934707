//! A durable task queue: tasks with a title, tags, a state and a priority, kept in a ptm pool.
//! Every command is one failure-atomic transaction: kill the process at any point and the pool
//! reopens with each command wholly done or not at all.
//!
//! ```text
//! task-queue POOL add PRIO TITLE [TAG...]   # prints the new id
//! task-queue POOL claim                      # the pending task of highest priority (oldest first)
//! task-queue POOL finish ID
//! task-queue POOL list
//! task-queue POOL search TAG
//! task-queue POOL purge                      # removes finished tasks
//! ```
//!
//! `task_queue_std.rs` is the same program on std collections (saved to a file after each
//! command); the README compares their lengths.

use std::{env, path::Path, process::ExitCode};

use ptm::{Checked, PCell, Persistent, Pool, PoolOptions, Transaction};
use ptm_collections::{PBTreeMap, PHashMap, PString, PValue, PVec};

/// Stored as its discriminant; a damaged value reads as `Error::CorruptData`, never as a state.
#[derive(Persistent, Clone, Copy, Debug, PartialEq)]
#[repr(u64)]
enum State {
    Pending,
    Claimed,
    Done,
}

/// `PValue`: removing a task from its map frees its title and tags.
#[derive(Persistent, PValue)]
#[repr(C)]
struct Task {
    title: PString,
    tags: PVec<PString>,
    state: PCell<Checked<State>>,
    prio: PCell<u64>,
}

#[derive(Persistent)]
#[repr(C)]
struct Root {
    next_id: PCell<u64>,
    tasks: PBTreeMap<u64, Task>,
    /// Pending tasks by `(u64::MAX - prio) << 64 | id`: highest priority, then oldest, first.
    pending: PBTreeMap<u128, u64>,
    by_tag: PHashMap<PString, PVec<u64>>,
}

fn queue_key(prio: u64, id: u64) -> u128 {
    (u128::from(u64::MAX - prio) << 64) | u128::from(id)
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(pool: &Pool<Root>, args: &[String]) -> Res<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    let num = |i: usize| -> Res<u64> { Ok(arg(i)?.parse()?) };
    pool.transaction(|tx, r| match arg(0)? {
        "add" => {
            let (prio, id) = (num(1)?, r.next_id.update(tx, |n| n + 1)?);
            let t = r.tasks.get_or_insert_new(tx, id)?;
            t.title.set(tx, arg(2)?)?;
            for tag in &args[3..] {
                t.tags.push_new(tx)?.set(tx, tag)?;
            }
            t.prio.set(tx, prio)?;
            drop(t);
            for tag in &args[3..] {
                r.by_tag.get_or_insert_new(tx, tag.as_str())?.push(tx, id)?;
            }
            r.pending.insert(tx, queue_key(prio, id), id)?;
            println!("{id}");
            Ok(())
        }
        "claim" => {
            let Some((_, id)) = r.pending.pop_first(tx)? else {
                println!("nothing pending");
                return Ok(());
            };
            let t = r.tasks.get_ref(tx, &id)?.ok_or("dangling id")?;
            t.state.store(tx, State::Claimed)?;
            println!("{id} {}", t.title.as_string(tx)?);
            Ok(())
        }
        "finish" => {
            let t = r.tasks.get_ref(tx, &num(1)?)?.ok_or("no such task")?;
            if t.state.load(tx)? == State::Pending {
                r.pending.remove(tx, &queue_key(t.prio.get(tx), num(1)?))?;
            }
            Ok(t.state.store(tx, State::Done)?)
        }
        "list" => {
            for (id, t) in r.tasks.iter_refs(tx)? {
                let tags: Vec<String> = t.tags.iter_strings(tx)?;
                let state = format!("{:?}", t.state.load(tx)?).to_lowercase();
                println!(
                    "{id} [{state}] p{} {} {tags:?}",
                    t.prio.get(tx),
                    t.title.as_string(tx)?
                );
            }
            Ok(())
        }
        "search" => {
            let ids = match r.by_tag.get_ref(tx, arg(1)?)? {
                Some(v) => v.to_vec(tx)?,
                None => Vec::new(),
            };
            for id in ids {
                if let Some(t) = r.tasks.get_ref(tx, &id)? {
                    println!("{id} {}", t.title.as_string(tx)?);
                }
            }
            Ok(())
        }
        "purge" => {
            let mut done = Vec::new();
            for (id, t) in r.tasks.iter_refs(tx)? {
                if t.state.load(tx)? == State::Done {
                    done.push(id);
                }
            }
            for id in &done {
                let tags = r
                    .tasks
                    .get_ref(tx, id)?
                    .map(|t| t.tags.iter_strings(tx))
                    .transpose()?;
                for tag in tags.unwrap_or_default() {
                    let Some(ids) = r.by_tag.get_ref(tx, tag.as_str())? else {
                        continue;
                    };
                    ids.retain(tx, |i| i != id)?;
                }
                r.tasks.remove_free(tx, id)?;
            }
            println!("purged {}", done.len());
            Ok(())
        }
        _ => Err("unknown command".into()),
    })
}

/// The strings of a `PVec<PString>`, copied out.
trait Strings {
    fn iter_strings(&self, tx: &Transaction<'_>) -> ptm::Result<Vec<String>>;
}
impl Strings for PVec<PString> {
    fn iter_strings(&self, tx: &Transaction<'_>) -> ptm::Result<Vec<String>> {
        (0..self.len(tx))
            .map(|i| {
                self.get_ref(tx, i)?
                    .map_or(Ok(String::new()), |s| s.as_string(tx))
            })
            .collect()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: task-queue POOL (add PRIO TITLE [TAG...] | claim | finish ID | list | search TAG | purge)");
        return ExitCode::FAILURE;
    };
    let opts = PoolOptions::new().layout("task-queue");
    let pool = if Path::new(path).exists() {
        Pool::<Root>::open(path, &opts)
    } else {
        Pool::<Root>::create(path, 8 << 20, &opts)
    };
    match pool.map_err(Into::into).and_then(|pool| run(&pool, &args[1..])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("task-queue: {e}");
            ExitCode::FAILURE
        }
    }
}
