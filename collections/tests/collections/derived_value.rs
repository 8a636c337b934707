//! `#[derive(PValue)]`: a struct of handles and cells (and a struct of such structs) stored as
//! a map value, a vector element and a queue element with no `unsafe` in this file; removing,
//! popping and clearing free every nested block (no leak, checked against the allocator), and
//! each derived field is read back across reopen.
#![forbid(unsafe_code)]

use std::path::Path;

use ptm::{Checked, Error, PCell, POption, Persistent, Pool, PoolOptions};
use ptm_collections::{PHashMap, PQueue, PString, PValue, PVec};

#[derive(Persistent, Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum State {
    Open,
    Done,
}

#[derive(Persistent, PValue)]
#[repr(C)]
struct Task {
    title: PString,
    tags: PVec<PString>,
    priority: PCell<u64>,
    due: PCell<POption<u64>>,
    state: PCell<Checked<State>>,
    _pad: PCell<[u8; 7]>,
}

/// Derived structs nest.
#[derive(Persistent, PValue)]
#[repr(C)]
struct Project {
    name: PString,
    tasks: PVec<Task>,
}

#[derive(Persistent)]
#[repr(C)]
struct Root {
    by_id: PHashMap<u64, Task>,
    projects: PVec<Project>,
    inbox: PQueue<Task>,
}

fn opts() -> PoolOptions {
    PoolOptions::new().force_pmem(true).lanes(2)
}

fn dir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn fill(tx: &ptm::Transaction<'_>, t: &Task, n: u64) -> ptm::Result<()> {
    t.title
        .set(tx, &format!("task {n} with a title long enough to need a block"))?;
    for i in 0..n % 4 + 1 {
        t.tags.push_new(tx)?.set(tx, &format!("tag {i}"))?;
    }
    t.priority.set(tx, n)?;
    t.due.store(tx, n.is_multiple_of(2).then_some(n * 100))?;
    t.state.store(
        tx,
        if n.is_multiple_of(3) {
            State::Done
        } else {
            State::Open
        },
    )
}

fn check(tx: &ptm::Transaction<'_>, t: &Task, n: u64) -> ptm::Result<()> {
    assert_eq!(
        t.title.as_string(tx)?,
        format!("task {n} with a title long enough to need a block")
    );
    let tags: Vec<String> = (0..t.tags.len(tx))
        .map(|i| t.tags.get_ref(tx, i).map(|s| s.expect("tag").as_string(tx)))
        .collect::<ptm::Result<ptm::Result<_>>>()??;
    let want: Vec<String> = (0..n % 4 + 1).map(|i| format!("tag {i}")).collect();
    assert_eq!(tags, want);
    assert_eq!(t.priority.get(tx), n);
    assert_eq!(t.due.load(tx)?, n.is_multiple_of(2).then_some(n * 100));
    assert_eq!(
        t.state.load(tx)?,
        if n.is_multiple_of(3) {
            State::Done
        } else {
            State::Open
        }
    );
    Ok(())
}

fn blocks(path: &Path) -> usize {
    let mut pool = Pool::<Root>::open(path, &opts()).unwrap();
    pool.allocated_blocks().unwrap().len()
}

#[test]
fn derived_values_round_trip_and_free_everything_they_own() {
    const { assert!(<Task as PValue>::OWNS && <Project as PValue>::OWNS) };
    let d = dir();
    let path = d.path().join("derived.pool");
    drop(Pool::<Root>::create(&path, 16 << 20, &opts()).unwrap());
    let empty = blocks(&path);

    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for n in 0..20 {
            fill(tx, &*r.by_id.get_or_insert_new(tx, n)?, n)?;
            fill(tx, &*r.inbox.push_new(tx)?, n)?;
        }
        for p in 0..3 {
            let project = r.projects.push_new(tx)?;
            project.name.set(tx, &format!("project {p}"))?;
            for n in 0..5 {
                fill(tx, &*project.tasks.push_new(tx)?, n)?;
            }
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    drop(pool);
    assert!(blocks(&path) > empty + 100);

    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for n in 0..20 {
            check(tx, &r.by_id.get_ref(tx, &n)?.expect("task"), n)?;
        }
        for p in 0..3 {
            let project = r.projects.get_ref(tx, p)?.expect("project");
            assert_eq!(project.name.as_string(tx)?, format!("project {p}"));
            for n in 0..5 {
                check(tx, &project.tasks.get_ref(tx, n)?.expect("task"), n)?;
            }
        }
        // Remove some of each: their titles, tags and tag strings are freed with them.
        for n in 0..10 {
            assert!(r.by_id.remove_free(tx, &n)?);
            r.inbox.pop_free(tx)?;
        }
        r.projects.pop_free(tx)
    })
    .unwrap();
    drop(pool);
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for n in 10..20 {
            check(tx, &r.by_id.get_ref(tx, &n)?.expect("task"), n)?;
        }
        check(tx, &r.inbox.front_ref(tx)?.expect("task"), 10)?;
        assert_eq!(r.projects.len(tx), 2);
        r.by_id.free(tx)?;
        r.projects.free(tx)?;
        r.inbox.free(tx)
    })
    .unwrap();
    drop(pool);
    // Every block the derived values owned is free again.
    assert_eq!(blocks(&path), empty);
}
