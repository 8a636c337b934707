use pmem_core::Persistent;

#[derive(Persistent)]
#[persistent(krate = "pmem_core")]
#[repr(C)]
struct Misspelt {
    a: u64,
}

fn main() {}
