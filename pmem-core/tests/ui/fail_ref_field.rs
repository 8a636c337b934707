use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    value: &'static u8,
}

fn main() {}
