use pmem_core::Persistent;

fn assert_persistent<T: Persistent>() {}

#[derive(Persistent)]
#[persistent(crate = "::pmem_core")]
#[repr(C)]
struct Explicit {
    a: u64,
}

/// The crate reached through a re-export of what the derive names: the trait, and the
/// `schema` module and `Encoded`.
mod reexport {
    pub use pmem_core::{schema, Encoded, Persistent};
}

#[derive(Persistent)]
#[persistent(crate = "reexport")]
#[repr(transparent)]
struct ViaReexport(u32);

#[derive(Persistent)]
#[persistent(crate = "crate::reexport")]
#[repr(transparent)]
struct GenericViaReexport<T>(T);

fn main() {
    assert_persistent::<Explicit>();
    assert_persistent::<ViaReexport>();
    assert_persistent::<GenericViaReexport<u8>>();
}
