use pmem_core::Persistent;

fn assert_persistent<T: Persistent>() {}

#[derive(Persistent)]
#[repr(C)]
struct Unit;

#[derive(Persistent)]
#[repr(C)]
struct Empty {}

#[derive(Persistent)]
#[repr(C)]
struct EmptyTuple();

fn main() {
    assert_persistent::<Unit>();
    assert_persistent::<Empty>();
    assert_persistent::<EmptyTuple>();
    assert_eq!(core::mem::size_of::<Unit>(), 0);
}
