use pmem_core::Persistent;

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    value: std::rc::Rc<u64>,
}

fn main() {}
