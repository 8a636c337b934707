use pmem_core::Persistent;

fn assert_persistent<T: Persistent>() {}

#[derive(Persistent)]
#[repr(C)]
struct Inner {
    a: u32,
    b: u32,
}

#[derive(Persistent)]
#[repr(transparent)]
struct Key(u64);

#[derive(Persistent)]
#[repr(C)]
struct Middle {
    inner: Inner,
    key: Key,
}

#[derive(Persistent)]
#[repr(C)]
struct Outer {
    middle: Middle,
    more: [Middle; 2],
    tail: u64,
}

/// `Self` in a field type names the struct being derived.
#[derive(Persistent)]
#[repr(C)]
struct SelfMarked {
    len: [u8; std::mem::size_of::<u64>()],
    me: core::marker::PhantomData<Self>,
    others: [core::marker::PhantomData<Self>; 2],
}

mod inner {
    /// Derived in another module, with public and private fields.
    #[derive(pmem_core::Persistent)]
    #[repr(C)]
    pub struct Remote {
        pub a: u64,
        b: u64,
    }
}

#[derive(Persistent)]
#[repr(C)]
struct UsesRemote {
    remote: inner::Remote,
}

fn main() {
    assert_persistent::<Outer>();
    assert_persistent::<SelfMarked>();
    assert_persistent::<UsesRemote>();
    assert_eq!(core::mem::size_of::<Outer>(), 16 * 3 + 8);
}
