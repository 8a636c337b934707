// A user struct with string fields stored in place in collections: no `unsafe` anywhere.
#![forbid(unsafe_code)]

use ptm::{PCell, Persistent, Pool, PoolOptions};
use ptm_collections::{PHashMap, PString, PVec, PValue};

#[derive(Persistent, PValue)]
#[repr(C)]
struct User {
    name: PString,
    emails: PVec<PString>,
    age: PCell<u64>,
}

#[derive(Persistent)]
#[repr(C)]
struct Root {
    users: PHashMap<u64, User>,
    list: PVec<User>,
}

fn main() -> ptm::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::<Root>::create(dir.path().join("u.pool"), 8 << 20, &PoolOptions::new())?;
    pool.transaction(|tx, r| {
        let u = r.users.get_or_insert_new(tx, 1)?;
        u.name.set(tx, "ada")?;
        u.emails.push_new(tx)?.set(tx, "ada@example.org")?;
        u.age.set(tx, 36)?;
        r.list.push_new(tx)?.name.set(tx, "grace")?;
        r.users.remove_free(tx, &1)?;
        r.list.pop_free(tx)?;
        Ok(())
    })
}
