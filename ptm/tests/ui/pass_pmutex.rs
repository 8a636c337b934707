use ptm::{PCell, PMutex, PRwLock, Persistent};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Account {
    balance: PCell<u64>,
    flags: PCell<[u8; 8]>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    accounts: [PMutex<Account>; 4],
    config: PRwLock<[u32; 2]>,
}

fn main() {
    let r: Root = ptm::pmem_core::read_from_bytes(&[0u8; 4 * 24 + 16]).unwrap();
    assert_eq!(ptm::pmem_core::bytes_of(&r).len(), 112);
}
