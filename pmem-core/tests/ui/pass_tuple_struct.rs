use pmem_core::Persistent;

fn assert_persistent<T: Persistent>() {}

#[derive(Persistent)]
#[repr(C)]
struct Point(u32, u32);

#[derive(Persistent)]
#[repr(transparent)]
struct Id(u64);

fn main() {
    assert_persistent::<Point>();
    assert_persistent::<Id>();
}
