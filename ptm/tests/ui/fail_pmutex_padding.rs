use ptm::{PMutex, Persistent};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Holder {
    // 8-byte lock word + 1 byte: 7 bytes of padding inside the mutex.
    flag: PMutex<u8>,
}

fn main() {
    let h: Holder = ptm::pmem_core::read_from_bytes(&[0u8; 16]).unwrap();
    let _ = ptm::pmem_core::bytes_of(&h);
}
