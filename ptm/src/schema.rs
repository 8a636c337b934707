//! Schemas of ptm's stored types (cells and locks describe the type they hold), and the check
//! of a pool's recorded root schema at open (see `layout::SchemaRecord`).

use pmem_core::schema::{Describer, Schema, TypeSchema};
use pmem_core::Persistent;

use crate::cell::{PCell, PLock, RawLock};

macro_rules! wrapper_schemas {
    ($($t:ident),* $(,)?) => {$(
        impl<T: Persistent> Schema for $t<T> {
            fn describe(d: &mut Describer) -> TypeSchema {
                TypeSchema::generic(stringify!($t), core::mem::size_of::<Self>(), vec![("T", d.of::<T>())])
            }
        }
    )*};
}

wrapper_schemas!(PCell);

/// A lock describes itself by its alias's name (`PMutex`, `PRwLock`, `PSharedLock`).
impl<R: RawLock, T: Persistent> Schema for PLock<R, T> {
    fn describe(d: &mut Describer) -> TypeSchema {
        TypeSchema::generic(R::NAME, core::mem::size_of::<Self>(), vec![("T", d.of::<T>())])
    }
}
