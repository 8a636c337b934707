use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    value: (u32, u32),
}

fn main() {}
