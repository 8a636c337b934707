use ptm::{PCell, Persistent};
use ptm_collections::{PString, PValue};

// A plain scalar: its collection moves and zeroes the bytes under shared references.
#[derive(Persistent, PValue)]
#[repr(C)]
struct Plain {
    name: PString,
    age: u64,
}

// Nothing in it: it would be `Sync`.
#[derive(Persistent, PValue)]
#[repr(C)]
struct Empty {}

// Not `Persistent`.
#[derive(PValue)]
#[repr(C)]
struct NotStored {
    age: PCell<u64>,
}

fn main() {}
