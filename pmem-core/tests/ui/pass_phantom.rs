use core::marker::PhantomData;
use pmem_core::Persistent;

fn assert_persistent<T: Persistent>() {}

/// Not `Persistent` itself: only named by the marker.
struct Tag;

#[derive(Persistent)]
#[repr(C)]
struct Typed {
    raw: u64,
    marker: PhantomData<Tag>,
    unsized_marker: PhantomData<str>,
}

fn main() {
    assert_persistent::<Typed>();
    assert_eq!(core::mem::size_of::<Typed>(), 8);
}
