use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    value: *mut u8,
}

fn main() {}
