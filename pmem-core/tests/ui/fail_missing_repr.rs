use pmem_core::Persistent;

#[derive(Persistent)]
struct NoRepr {
    a: u64,
    b: u64,
}

fn main() {}
