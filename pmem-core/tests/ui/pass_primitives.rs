use pmem_core::Persistent;

fn assert_persistent<T: Persistent>() {}

#[derive(Persistent)]
#[repr(C)]
struct AllPrimitives {
    a_u128: u128,
    a_i128: i128,
    a_u64: u64,
    a_i64: i64,
    a_usize: usize,
    a_isize: isize,
    a_f64: f64,
    a_u32: u32,
    a_i32: i32,
    a_f32: f32,
    a_u16: u16,
    a_i16: i16,
    a_u8: u8,
    a_i8: i8,
    a_unit: (),
    _pad: [u8; 6],
}

#[derive(Persistent)]
#[repr(C)]
struct Wrapped {
    counter: std::num::Wrapping<u64>,
}

fn main() {
    assert_persistent::<AllPrimitives>();
    assert_persistent::<Wrapped>();
    assert_eq!(core::mem::size_of::<AllPrimitives>(), 96);
}
