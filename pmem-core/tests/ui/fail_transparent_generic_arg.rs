use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(transparent)]
struct Wrapper<T>(T);

fn main() {
    let flag = Wrapper(true);
    let _ = pmem_core::bytes_of(&flag);
}
