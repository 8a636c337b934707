use pmem_core::Persistent;

fn assert_persistent<T: Persistent>() {}

#[derive(Persistent)]
#[repr(C)]
struct Cell {
    key: u32,
    value: u32,
}

#[derive(Persistent)]
#[repr(C)]
struct Table {
    bytes: [u8; 16],
    words: [u64; 4],
    matrix: [[u32; 3]; 2],
    cells: [Cell; 4],
    grid: [[Cell; 2]; 3],
    empty: [u64; 0],
}

fn main() {
    assert_persistent::<Table>();
    assert_persistent::<[Table; 2]>();
    assert_eq!(core::mem::size_of::<Table>(), 16 + 32 + 24 + 32 + 48);
}
