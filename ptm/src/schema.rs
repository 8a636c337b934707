//! Schemas of ptm's stored types (cells and locks describe the type they hold), and the check
//! of a pool's recorded root schema at open (see `layout::SchemaRecord`).

use pmem_core::schema::{Describer, Schema, TypeSchema};
use pmem_core::Persistent;

use crate::cell::{PCell, PMutex, PRwLock, PSharedLock};

macro_rules! wrapper_schemas {
    ($($t:ident),* $(,)?) => {$(
        impl<T: Persistent> Schema for $t<T> {
            fn describe(d: &mut Describer) -> TypeSchema {
                TypeSchema::generic(stringify!($t), core::mem::size_of::<Self>(), vec![("T", d.of::<T>())])
            }
        }
    )*};
}

wrapper_schemas!(PCell, PMutex, PRwLock, PSharedLock);
