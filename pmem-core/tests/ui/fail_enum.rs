use pmem_core::Persistent;

// No fixed-width integer repr: the stored size would be the compiler's choice.
#[derive(Persistent, Clone, Copy)]
enum State {
    Idle,
    Busy,
}

// Variants with data cannot be stored as a discriminant.
#[derive(Persistent, Clone, Copy)]
#[repr(u8)]
enum Shape {
    Dot,
    Circle(u32),
}

// An enum is not `Persistent` (not every byte is a variant): a field must be `Checked<E>`.
#[derive(Persistent, Clone, Copy)]
#[repr(u8)]
enum Level {
    Low,
    High,
}

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    level: Level,
}

fn main() {}
