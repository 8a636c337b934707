use pmem_core::{Checked, Encoded, Persistent, POption};

#[derive(Persistent, Clone, Copy, Debug, PartialEq)]
#[repr(u16)]
enum Level {
    Low = 3,
    High = 700,
}

#[derive(Persistent, Clone, Copy, Debug, PartialEq)]
#[repr(i8)]
enum Sign {
    Minus = -1,
    Zero,
    Plus,
}

#[derive(Persistent)]
#[repr(C)]
struct Holder {
    level: Checked<Level>,
    sign: Checked<Sign>,
    _pad: [u8; 5],
    maybe: POption<Level>,
}

fn main() {
    assert_eq!(Level::High.encode(), 700);
    assert_eq!(Sign::decode(-1), Some(Sign::Minus));
    assert_eq!(Sign::decode(2), None);
    let h = Holder {
        level: Checked::new(Level::Low),
        sign: Checked::new(Sign::Plus),
        _pad: [0; 5],
        maybe: Checked::new(Some(Level::High)),
    };
    assert_eq!(h.level.get(), Ok(Level::Low));
    assert_eq!(h.sign.get(), Ok(Sign::Plus));
    assert_eq!(h.maybe.get(), Ok(Some(Level::High)));
}
