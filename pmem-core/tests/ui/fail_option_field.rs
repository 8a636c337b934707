use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    value: Option<u32>,
}

fn main() {}
