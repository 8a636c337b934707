//! A persistent key-value store with a command line: string keys and values in a
//! `PBTreeMap<PString, PString>`, each command one failure-atomic transaction.
//!
//! ```text
//! kv POOL put KEY VALUE      # prints the old value, if any
//! kv POOL get KEY
//! kv POOL del KEY
//! kv POOL list [PREFIX]      # in key order
//! kv POOL import             # `KEY=VALUE` lines from stdin, all in one transaction
//! ```

use std::{env, io::BufRead, path::Path, process::ExitCode};

use ptm::{Persistent, Pool, PoolOptions};
use ptm_collections::{PBTreeMap, PString};

#[derive(Persistent)]
#[repr(C)]
struct Root {
    map: PBTreeMap<PString, PString>,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(pool: &Pool<Root>, args: &[String]) -> Res<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    match arg(0)? {
        "put" => pool.transaction(|tx, r| {
            let value = r.map.get_or_insert_new(tx, arg(1)?)?;
            let old = value.as_string(tx)?;
            value.set(tx, arg(2)?)?;
            if !old.is_empty() {
                println!("{old}");
            }
            Ok(())
        }),
        "get" => pool.transaction(|tx, r| match r.map.get_ref(tx, arg(1)?)? {
            Some(v) => {
                println!("{}", v.as_string(tx)?);
                Ok(())
            }
            None => Err(format!("{}: not found", arg(1)?).into()),
        }),
        "del" => pool.transaction(|tx, r| match r.map.remove_free(tx, arg(1)?)? {
            true => Ok(()),
            false => Err(format!("{}: not found", arg(1)?).into()),
        }),
        "list" => pool.transaction(|tx, r| {
            let prefix = args.get(1).map_or("", String::as_str);
            let mut range = r.map.range_refs(tx, prefix..)?;
            for (k, v) in range.by_ref() {
                let k = k.as_string(tx)?;
                if !k.starts_with(prefix) {
                    break;
                }
                println!("{k}={}", v.as_string(tx)?);
            }
            Ok(range.error().map_or(Ok(()), |e| Err(e.to_string()))?)
        }),
        "import" => {
            let lines: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
            pool.transaction(|tx, r| {
                for line in &lines {
                    let (k, v) = line.split_once('=').ok_or("expected KEY=VALUE")?;
                    r.map.get_or_insert_new(tx, k)?.set(tx, v)?;
                }
                println!("imported {}", lines.len());
                Ok(())
            })
        }
        _ => Err("unknown command".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: kv POOL (put KEY VALUE | get KEY | del KEY | list [PREFIX] | import)");
        return ExitCode::FAILURE;
    };
    let opts = PoolOptions::new().layout("kv");
    let pool = if Path::new(path).exists() {
        Pool::<Root>::open(path, &opts)
    } else {
        Pool::<Root>::create(path, 64 << 20, &opts)
    };
    match pool.map_err(Into::into).and_then(|pool| run(&pool, &args[1..])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}
