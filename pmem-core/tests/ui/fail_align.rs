use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C, align(16))]
struct Aligned {
    a: u64,
}

fn main() {}
