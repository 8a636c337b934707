//! The task queue of `task_queue.rs` on std collections, for comparison: same commands, same
//! output, the state saved to a file (one line per task) after every command. Not crash-safe:
//! a kill during the save can lose the file, which is what the ptm version is for.

use std::collections::{BTreeMap, HashMap};
use std::{env, fs, process::ExitCode};

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Pending,
    Claimed,
    Done,
}

struct Task {
    title: String,
    tags: Vec<String>,
    state: State,
    prio: u64,
}

#[derive(Default)]
struct Root {
    next_id: u64,
    tasks: BTreeMap<u64, Task>,
    pending: BTreeMap<u128, u64>,
    by_tag: HashMap<String, Vec<u64>>,
}

fn queue_key(prio: u64, id: u64) -> u128 {
    (u128::from(u64::MAX - prio) << 64) | u128::from(id)
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(r: &mut Root, args: &[String]) -> Res<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    let num = |i: usize| -> Res<u64> { Ok(arg(i)?.parse()?) };
    match arg(0)? {
        "add" => {
            let (prio, id) = (num(1)?, r.next_id + 1);
            r.next_id = id;
            let tags = args[3..].to_vec();
            for tag in &tags {
                r.by_tag.entry(tag.clone()).or_default().push(id);
            }
            r.tasks.insert(
                id,
                Task {
                    title: arg(2)?.to_owned(),
                    tags,
                    state: State::Pending,
                    prio,
                },
            );
            r.pending.insert(queue_key(prio, id), id);
            println!("{id}");
            Ok(())
        }
        "claim" => {
            let Some((_, id)) = r.pending.pop_first() else {
                println!("nothing pending");
                return Ok(());
            };
            let t = r.tasks.get_mut(&id).ok_or("dangling id")?;
            t.state = State::Claimed;
            println!("{id} {}", t.title);
            Ok(())
        }
        "finish" => {
            let t = r.tasks.get_mut(&num(1)?).ok_or("no such task")?;
            if t.state == State::Pending {
                r.pending.remove(&queue_key(t.prio, num(1)?));
            }
            t.state = State::Done;
            Ok(())
        }
        "list" => {
            for (id, t) in &r.tasks {
                let state = format!("{:?}", t.state).to_lowercase();
                println!("{id} [{state}] p{} {} {:?}", t.prio, t.title, t.tags);
            }
            Ok(())
        }
        "search" => {
            for id in r.by_tag.get(arg(1)?).into_iter().flatten() {
                if let Some(t) = r.tasks.get(id) {
                    println!("{id} {}", t.title);
                }
            }
            Ok(())
        }
        "purge" => {
            let done: Vec<u64> = r
                .tasks
                .iter()
                .filter(|(_, t)| t.state == State::Done)
                .map(|(id, _)| *id)
                .collect();
            for id in &done {
                for tag in r.tasks.remove(id).map(|t| t.tags).unwrap_or_default() {
                    if let Some(ids) = r.by_tag.get_mut(&tag) {
                        ids.retain(|i| i != id);
                    }
                }
            }
            println!("purged {}", done.len());
            Ok(())
        }
        _ => Err("unknown command".into()),
    }
}

/// One line per task: `id \t state \t prio \t title \t tag,tag`, after a first line `next_id`.
fn load(path: &str) -> Res<Root> {
    let mut r = Root::default();
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(r);
    };
    let mut lines = text.lines();
    r.next_id = lines.next().unwrap_or("0").parse()?;
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        let [id, state, prio, title, tags] = f[..] else {
            return Err("bad line".into());
        };
        let (id, prio) = (id.parse()?, prio.parse()?);
        let state = match state {
            "0" => State::Pending,
            "1" => State::Claimed,
            "2" => State::Done,
            _ => return Err("bad state".into()),
        };
        let tags: Vec<String> = tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        for tag in &tags {
            r.by_tag.entry(tag.clone()).or_default().push(id);
        }
        if state == State::Pending {
            r.pending.insert(queue_key(prio, id), id);
        }
        r.tasks.insert(
            id,
            Task {
                title: title.to_owned(),
                tags,
                state,
                prio,
            },
        );
    }
    Ok(r)
}

fn save(r: &Root, path: &str) -> Res<()> {
    let mut out = format!("{}\n", r.next_id);
    for (id, t) in &r.tasks {
        out += &format!(
            "{id}\t{}\t{}\t{}\t{}\n",
            t.state as u8,
            t.prio,
            t.title,
            t.tags.join(",")
        );
    }
    Ok(fs::write(path, out)?)
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: task-queue-std FILE (add PRIO TITLE [TAG...] | claim | finish ID | list | search TAG | purge)");
        return ExitCode::FAILURE;
    };
    let result = load(path).and_then(|mut r| run(&mut r, &args[1..]).and_then(|()| save(&r, path)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("task-queue-std: {e}");
            ExitCode::FAILURE
        }
    }
}
