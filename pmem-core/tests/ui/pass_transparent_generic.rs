use core::marker::PhantomData;
use pmem_core::Persistent;

fn assert_persistent<T: Persistent>() {}

#[derive(Persistent)]
#[repr(transparent)]
struct Wrapper<T>(T);

#[derive(Persistent)]
#[repr(transparent)]
struct Tagged<T, Tag: ?Sized + 'static> {
    value: T,
    tag: PhantomData<Tag>,
}

#[derive(Persistent)]
#[repr(transparent)]
struct Bytes<const N: usize> {
    bytes: [u8; N],
}

#[derive(Persistent)]
#[repr(transparent)]
struct Bounded<T: Copy>
where
    T: Default,
{
    value: T,
}

#[derive(Persistent)]
#[repr(C)]
struct Inner {
    a: u64,
}

fn main() {
    assert_persistent::<Wrapper<u64>>();
    assert_persistent::<Wrapper<Wrapper<[u8; 3]>>>();
    assert_persistent::<Wrapper<Inner>>();
    assert_persistent::<Tagged<u32, str>>();
    assert_persistent::<Bytes<7>>();
    assert_persistent::<Bounded<u16>>();
}
