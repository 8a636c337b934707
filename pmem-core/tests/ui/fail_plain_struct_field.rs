use pmem_core::Persistent;

/// A `#[repr(C)]` struct that does not derive `Persistent`.
#[repr(C)]
struct Plain {
    x: u64,
}

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    plain: Plain,
}

fn main() {}
