use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    value: std::sync::Arc<u64>,
}

fn main() {}
