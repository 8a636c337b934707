use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
struct Pair<T> {
    tag: u8,
    value: T,
}

fn main() {}
