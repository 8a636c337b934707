//! A user-defined linked structure on `PPtr`: a persistent sorted list of `u64` whose nodes are
//! allocated in the pool's heap and linked by 8-byte offset pointers, which stay valid wherever
//! the pool is mapped next time. Inserting links a fresh node with one logged pointer store;
//! removing unlinks and frees in the same transaction, so a crash never leaks a node or leaves
//! a dangling link.
//!
//! ```text
//! linked-list POOL insert N...   # keeps the list sorted, ignores duplicates
//! linked-list POOL remove N...
//! linked-list POOL print
//! ```

use std::{env, path::Path, process::ExitCode};

use ptm::{PCell, PPtr, Persistent, Pool, PoolOptions, Transaction};

#[derive(Persistent)]
#[repr(C)]
struct Node {
    value: PCell<u64>,
    next: PCell<PPtr<Node>>,
}

#[derive(Persistent)]
#[repr(C)]
struct Root {
    head: PCell<PPtr<Node>>,
    len: PCell<u64>,
}

/// The node `p` points at.
fn node<'t>(tx: &'t Transaction<'_>, p: PPtr<Node>) -> ptm::Result<&'t Node> {
    // SAFETY: every non-null link in this pool points at a live `Node` allocated by `insert`
    // (nodes are freed only in the transaction that unlinks them), and nodes are reached
    // through their cells only, by the thread running `tx`.
    unsafe { tx.deref(p) }
}

/// The link that points at the first node whose value is `>= v` (or the last, null link).
fn find<'t>(tx: &'t Transaction<'_>, root: &'t Root, v: u64) -> ptm::Result<&'t PCell<PPtr<Node>>> {
    let mut link = &root.head;
    while !link.get(tx).is_null() {
        let n = node(tx, link.get(tx))?;
        if n.value.get(tx) >= v {
            break;
        }
        link = &n.next;
    }
    Ok(link)
}

fn insert(tx: &Transaction<'_>, root: &Root, v: u64) -> ptm::Result<()> {
    let link = find(tx, root, v)?;
    let next = link.get(tx);
    if !next.is_null() && node(tx, next)?.value.get(tx) == v {
        return Ok(());
    }
    // A fresh block is new memory of this transaction: its stores are not logged, and an abort
    // or a crash before commit frees it.
    let fresh = tx.alloc_zeroed::<Node>()?;
    let n = node(tx, fresh)?;
    n.value.set(tx, v)?;
    n.next.set(tx, next)?;
    link.set(tx, fresh)?;
    root.len.update(tx, |n| n + 1).map(drop)
}

fn remove(tx: &Transaction<'_>, root: &Root, v: u64) -> ptm::Result<bool> {
    let link = find(tx, root, v)?;
    let p = link.get(tx);
    if p.is_null() || node(tx, p)?.value.get(tx) != v {
        return Ok(false);
    }
    link.set(tx, node(tx, p)?.next.get(tx))?;
    tx.free(p)?; // takes effect at commit
    root.len.update(tx, |n| n - 1).map(|_| true)
}

fn run(pool: &Pool<Root>, args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let nums = args
        .iter()
        .skip(1)
        .map(|a| a.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()?;
    match args.first().map(String::as_str) {
        Some("insert") => pool.transaction(|tx, r| nums.iter().try_for_each(|&v| insert(tx, r, v)))?,
        Some("remove") => {
            pool.transaction(|tx, r| nums.iter().try_for_each(|&v| remove(tx, r, v).map(drop)))?
        }
        Some("print") => pool.transaction(|tx, r| {
            let (mut p, mut out) = (r.head.get(tx), Vec::new());
            while !p.is_null() {
                let n = node(tx, p)?;
                out.push(n.value.get(tx));
                p = n.next.get(tx);
            }
            println!("{} {out:?}", r.len.get(tx));
            Ok::<_, ptm::Error>(())
        })?,
        _ => return Err("usage: linked-list POOL (insert N... | remove N... | print)".into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: linked-list POOL (insert N... | remove N... | print)");
        return ExitCode::FAILURE;
    };
    let opts = PoolOptions::new().layout("linked-list");
    let pool = if Path::new(path).exists() {
        Pool::<Root>::open(path, &opts)
    } else {
        Pool::<Root>::create(path, 8 << 20, &opts)
    };
    match pool.map_err(Into::into).and_then(|pool| run(&pool, &args[1..])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linked-list: {e}");
            ExitCode::FAILURE
        }
    }
}
