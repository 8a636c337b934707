use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
