use pmem_core::{PPtr, Persistent};

fn assert_persistent<T: Persistent>() {}

#[derive(Persistent)]
#[repr(C)]
struct Node {
    key: u64,
    next: PPtr<Node>,
    prev: PPtr<Self>,
    children: [PPtr<Node>; 4],
}

#[derive(Persistent)]
#[repr(C)]
struct List {
    head: PPtr<Node>,
    tail: PPtr<Node>,
    len: u64,
}

#[derive(Persistent)]
#[repr(transparent)]
struct Link<T>(PPtr<T>);

fn main() {
    assert_persistent::<Node>();
    assert_persistent::<List>();
    assert_persistent::<Link<Node>>();
    assert_eq!(core::mem::size_of::<Node>(), 8 * 7);
}
