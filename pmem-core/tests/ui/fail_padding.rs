use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
struct Padded {
    a: u8,
    b: u64,
}

fn main() {}
