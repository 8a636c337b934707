//! Schema fingerprints: what a stored type looks like, so that a pool is never read as another
//! type.
//!
//! Every [`Persistent`](crate::Persistent) type describes itself through [`Schema`] (a
//! supertrait of `Persistent`): its name and size, the names and types of its fields (derived
//! structs), its type arguments (collections, cells, locks, [`PPtr`](crate::PPtr)), and its
//! variants (derived enums), recursively. `#[derive(Persistent)]` writes the description; the
//! crates of this workspace describe their own types.
//!
//! A description ([`TypeSchema`]) has a canonical text [encoding](TypeSchema::encode), for
//! example
//!
//! ```text
//! Root/56{tasks:PHashMap/32<K=u64/8,V=Task/40{title:PString/24,done:PCell/8<T=u64/8>}>,n:PCell/8<T=u64/8>}
//! ```
//!
//! and a [fingerprint](TypeSchema::fingerprint) (FNV-1a, 64 bits, of that text). ptm records the
//! root type's fingerprint and encoding in the pool when it is created, and refuses to open it as
//! a type with another fingerprint, naming the first field that differs
//! ([`TypeSchema::first_difference`]).
//!
//! A type that reaches itself (a linked node holding `PPtr<Node>`), or a struct used twice in one
//! schema, is described in full once; later occurrences are a [`SchemaKind::Seen`] reference by
//! name and size. This keeps descriptions finite and linear in the number of distinct types.

use core::any::TypeId;
use core::fmt::Write as _;
use core::marker::PhantomData;
use core::num::Wrapping;

/// A type that can describe its stored shape: name, size, fields, type arguments, variants.
///
/// A supertrait of [`Persistent`](crate::Persistent): every stored type has a schema.
/// `#[derive(Persistent)]` implements it; implement it by hand next to a manual
/// `unsafe impl Persistent`, with [`Describer::record`] for a struct (required when the type can
/// reach itself, e.g. through a `PPtr<Self>`) and [`TypeSchema::generic`] or
/// [`TypeSchema::scalar`] otherwise.
///
/// # Examples
///
/// ```
/// use pmem_core::schema::{schema_of, Describer, Schema, TypeSchema};
///
/// struct Meters(u64);
///
/// impl Schema for Meters {
///     fn describe(d: &mut Describer) -> TypeSchema {
///         d.record::<Self>("Meters", 8, |d| vec![("0".into(), d.of::<u64>())])
///     }
/// }
///
/// assert_eq!(schema_of::<Meters>().encode(), "Meters/8{0:u64/8}");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not describe its schema",
    label = "`{Self}` does not implement `Schema`",
    note = "every `Persistent` type describes its stored shape (pmem_core::schema): use \
            `#[derive(Persistent)]`, or implement `Schema` next to a manual `unsafe impl Persistent`"
)]
pub trait Schema: 'static {
    /// Describes the type. Nested types are described through `d` ([`Describer::of`]), so
    /// that recursive and repeated types stay finite.
    fn describe(d: &mut Describer) -> TypeSchema;
}

/// The description of `T`'s stored shape.
pub fn schema_of<T: Schema + ?Sized>() -> TypeSchema {
    Describer::default().of::<T>()
}

/// Builds one schema: remembers the structs already described, so that a type reaching itself,
/// or used twice, is described once.
#[derive(Debug, Default)]
pub struct Describer {
    seen: Vec<TypeId>,
}

impl Describer {
    /// The description of `T` (as part of the schema being built).
    pub fn of<T: Schema + ?Sized>(&mut self) -> TypeSchema {
        T::describe(self)
    }

    /// Describes a struct `T` called `name`, of `size` bytes, whose fields `fields` describes,
    /// in declaration order, as `(field name, description)`. If `T` was already described in
    /// this schema (it is being described now, so it reaches itself, or it appeared before),
    /// returns a [`SchemaKind::Seen`] reference instead and does not call `fields`.
    pub fn record<T: ?Sized + 'static>(
        &mut self,
        name: &str,
        size: usize,
        fields: impl FnOnce(&mut Self) -> Vec<(String, TypeSchema)>,
    ) -> TypeSchema {
        let id = TypeId::of::<T>();
        let kind = if self.seen.contains(&id) {
            SchemaKind::Seen
        } else {
            self.seen.push(id);
            let fields = fields(self)
                .into_iter()
                .map(|(label, ty)| (sanitize(&label), ty))
                .collect();
            SchemaKind::Struct(fields)
        };
        TypeSchema {
            name: sanitize(name),
            size: size as u64,
            kind,
        }
    }
}

/// The stored shape of a type: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSchema {
    /// The type's name, without path or arguments (`u64`, `PVec`, `Task`; `[4]` for an array of
    /// 4 elements).
    pub name: String,
    /// `size_of` the type, in bytes.
    pub size: u64,
    /// What the type is made of.
    pub kind: SchemaKind,
}

/// What a [`TypeSchema`] is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaKind {
    /// A primitive or an opaque type: described by name and size alone.
    Scalar,
    /// A generic type (collection, cell, lock, pointer, array): its type arguments, each with a
    /// label (`T`; `K`, `V`).
    Generic(Vec<(String, TypeSchema)>),
    /// A struct: its fields in declaration order (tuple fields are named `0`, `1`, ...).
    Struct(Vec<(String, TypeSchema)>),
    /// A fieldless enum stored as its discriminant (the size is the discriminant's): every
    /// variant's name and value.
    Enum(Vec<(String, i128)>),
    /// A struct already described earlier in the same schema (it reaches itself, or appears
    /// twice): named, not repeated.
    Seen,
}

/// Where two schemas first differ: see [`TypeSchema::first_difference`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaDifference {
    /// The path to the differing part from the root type: `Root.tasks<V>.title`.
    pub at: String,
    /// What the stored schema has there (`nothing` for a missing field).
    pub stored: String,
    /// What the expected schema has there.
    pub expected: String,
}

/// Why an encoded schema could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaParseError {
    /// Byte offset in the text where decoding stopped.
    pub at: usize,
    /// What was wrong there.
    pub what: &'static str,
}

impl core::fmt::Display for SchemaParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bad schema encoding at byte {}: {}", self.at, self.what)
    }
}

impl std::error::Error for SchemaParseError {}

/// Characters with a meaning in the encoding; replaced by `_` in names and labels.
const RESERVED: &[char] = &['^', '/', '<', '>', '{', '}', '(', ')', ',', ':', '='];

fn sanitize(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if RESERVED.contains(&c) || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if clean.is_empty() {
        "_".to_owned()
    } else {
        clean
    }
}

/// Deepest nesting [`TypeSchema::decode`] accepts (a stored encoding is data read from a pool).
pub const MAX_DEPTH: usize = 64;

impl TypeSchema {
    /// A primitive or opaque type: name and size only.
    pub fn scalar(name: &str, size: usize) -> TypeSchema {
        TypeSchema {
            name: sanitize(name),
            size: size as u64,
            kind: SchemaKind::Scalar,
        }
    }

    /// A generic type with labelled type arguments (`("T", d.of::<T>())`).
    pub fn generic(name: &str, size: usize, args: Vec<(&str, TypeSchema)>) -> TypeSchema {
        TypeSchema {
            name: sanitize(name),
            size: size as u64,
            kind: SchemaKind::Generic(args.into_iter().map(|(l, t)| (sanitize(l), t)).collect()),
        }
    }

    /// A fieldless enum of `size` bytes (its discriminant's) with these variants.
    pub fn enumeration(name: &str, size: usize, variants: Vec<(&str, i128)>) -> TypeSchema {
        TypeSchema {
            name: sanitize(name),
            size: size as u64,
            kind: SchemaKind::Enum(variants.into_iter().map(|(l, v)| (sanitize(l), v)).collect()),
        }
    }

    /// The canonical text encoding (what ptm stores in the pool and the fingerprint hashes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut String) {
        if self.kind == SchemaKind::Seen {
            out.push('^');
        }
        let _ = write!(out, "{}/{}", self.name, self.size);
        match &self.kind {
            SchemaKind::Scalar | SchemaKind::Seen => {}
            SchemaKind::Generic(args) => {
                out.push('<');
                for (i, (label, ty)) in args.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(label);
                    out.push('=');
                    ty.encode_into(out);
                }
                out.push('>');
            }
            SchemaKind::Struct(fields) => {
                out.push('{');
                for (i, (label, ty)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(label);
                    out.push(':');
                    ty.encode_into(out);
                }
                out.push('}');
            }
            SchemaKind::Enum(variants) => {
                out.push('(');
                for (i, (label, value)) in variants.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{label}={value}");
                }
                out.push(')');
            }
        }
    }

    /// The fingerprint: FNV-1a (64 bits) of the [encoding](TypeSchema::encode), never 0.
    pub fn fingerprint(&self) -> u64 {
        fingerprint_of(&self.encode())
    }

    /// Decodes an [encoding](TypeSchema::encode).
    ///
    /// # Errors
    ///
    /// [`SchemaParseError`] naming the byte where the text stops being an encoding (it is read
    /// from a pool: damage is an error, never a panic).
    pub fn decode(text: &str) -> Result<TypeSchema, SchemaParseError> {
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
        };
        let ty = p.node(0)?;
        if p.at != p.s.len() {
            return Err(p.err("trailing bytes after the schema"));
        }
        Ok(ty)
    }

    /// Where `stored` (what a pool holds) first differs from `self` (what the program expects),
    /// walking fields and type arguments in order; `None` when they are equal.
    pub fn first_difference(&self, stored: &TypeSchema) -> Option<SchemaDifference> {
        diff(&self.short(), stored, self)
    }

    /// A one-line name for the type: `PVec<PString>`, `[u64; 4]`, `Task`.
    pub fn short(&self) -> String {
        match &self.kind {
            SchemaKind::Generic(args) => {
                if let (Some(n), [(_, elem)]) = (array_len(&self.name), args.as_slice()) {
                    return format!("[{}; {n}]", elem.short());
                }
                let args: Vec<String> = args.iter().map(|(_, t)| t.short()).collect();
                format!("{}<{}>", self.name, args.join(", "))
            }
            _ => self.name.clone(),
        }
    }

    /// A readable multi-line rendering (for `ptm info`): one line per field, nested structs and
    /// enums indented below the field or type argument that holds them.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, 0, None);
        out
    }

    fn render_into(&self, out: &mut String, depth: usize, label: Option<&str>) {
        let indent = "  ".repeat(depth);
        let label = label.map(|l| format!("{l}: ")).unwrap_or_default();
        let unit = if self.size == 1 { "byte" } else { "bytes" };
        let _ = write!(out, "{indent}{label}{} ({} {unit})", self.short(), self.size);
        match &self.kind {
            SchemaKind::Seen => out.push_str(" (described above)\n"),
            SchemaKind::Enum(variants) => {
                let list: Vec<String> = variants.iter().map(|(l, v)| format!("{l} = {v}")).collect();
                let _ = writeln!(out, ": {}", list.join(" | "));
            }
            SchemaKind::Struct(fields) => {
                out.push('\n');
                for (l, t) in fields {
                    t.render_into(out, depth + 1, Some(l));
                }
            }
            SchemaKind::Generic(args) => {
                out.push('\n');
                for (l, t) in args.iter().filter(|(_, t)| t.has_structure()) {
                    t.render_into(out, depth + 1, Some(&format!("<{l}>")));
                }
            }
            SchemaKind::Scalar => out.push('\n'),
        }
    }

    /// Whether rendering should show this type's insides (a struct or enum somewhere inside).
    fn has_structure(&self) -> bool {
        match &self.kind {
            SchemaKind::Struct(_) | SchemaKind::Enum(_) => true,
            SchemaKind::Generic(args) => args.iter().any(|(_, t)| t.has_structure()),
            SchemaKind::Scalar | SchemaKind::Seen => false,
        }
    }

    fn with_size(&self) -> String {
        format!("{} ({} bytes)", self.short(), self.size)
    }
}

fn array_len(name: &str) -> Option<u64> {
    name.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// FNV-1a (64 bits) of `encoding`, with 0 (which a pool uses for "no schema recorded") mapped
/// to 1.
pub fn fingerprint_of(encoding: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in encoding.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

fn diff(at: &str, stored: &TypeSchema, expected: &TypeSchema) -> Option<SchemaDifference> {
    let here = |stored: String, expected: String| {
        Some(SchemaDifference {
            at: at.to_owned(),
            stored,
            expected,
        })
    };
    if stored.name != expected.name
        || core::mem::discriminant(&stored.kind) != core::mem::discriminant(&expected.kind)
    {
        return here(stored.with_size(), expected.with_size());
    }
    // Same name and kind: the first difference inside (a field added to a struct changes its
    // size too, but naming the field says more), else the size.
    let inside = match (&stored.kind, &expected.kind) {
        (SchemaKind::Generic(s), SchemaKind::Generic(e)) => {
            if s.len() != e.len() || s.iter().zip(e).any(|(a, b)| a.0 != b.0) {
                return here(stored.short(), expected.short());
            }
            s.iter()
                .zip(e)
                .find_map(|((label, st), (_, et))| diff(&format!("{at}<{label}>"), st, et))
        }
        (SchemaKind::Struct(s), SchemaKind::Struct(e)) => struct_diff(at, s, e),
        (SchemaKind::Enum(s), SchemaKind::Enum(e)) if s != e => {
            let list = |v: &[(String, i128)]| {
                let names: Vec<String> = v.iter().map(|(l, n)| format!("{l} = {n}")).collect();
                format!("{} {{ {} }}", stored.name, names.join(", "))
            };
            return here(list(s), list(e));
        }
        _ => None,
    };
    if inside.is_some() {
        return inside;
    }
    if stored.size != expected.size {
        return here(stored.with_size(), expected.with_size());
    }
    None
}

fn struct_diff(
    at: &str,
    stored: &[(String, TypeSchema)],
    expected: &[(String, TypeSchema)],
) -> Option<SchemaDifference> {
    for i in 0..stored.len().max(expected.len()) {
        let d = match (stored.get(i), expected.get(i)) {
            (Some((sl, st)), Some((el, et))) if sl == el => diff(&format!("{at}.{el}"), st, et),
            (Some((sl, st)), Some((el, et))) => Some(SchemaDifference {
                at: format!("{at}.{el}"),
                stored: format!("field `{sl}`: {}", st.short()),
                expected: format!("field `{el}`: {}", et.short()),
            }),
            (None, Some((el, et))) => Some(SchemaDifference {
                at: format!("{at}.{el}"),
                stored: "nothing (the field is new)".to_owned(),
                expected: et.with_size(),
            }),
            (Some((sl, st)), None) => Some(SchemaDifference {
                at: format!("{at}.{sl}"),
                stored: st.with_size(),
                expected: "nothing (the field was removed)".to_owned(),
            }),
            (None, None) => None,
        };
        if d.is_some() {
            return d;
        }
    }
    None
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> SchemaParseError {
        SchemaParseError { at: self.at, what }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), SchemaParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    /// A name or label: up to the next reserved byte.
    fn word(&mut self) -> Result<String, SchemaParseError> {
        let start = self.at;
        while let Some(c) = self.peek() {
            if c.is_ascii() && (RESERVED.contains(&char::from(c)) || c.is_ascii_whitespace()) {
                break;
            }
            self.at += 1;
        }
        if start == self.at {
            return Err(self.err("empty name"));
        }
        core::str::from_utf8(&self.s[start..self.at])
            .map(str::to_owned)
            .map_err(|_| SchemaParseError {
                at: start,
                what: "name is not UTF-8",
            })
    }

    fn number(&mut self) -> Result<i128, SchemaParseError> {
        let start = self.at;
        self.eat(b'-');
        let digits = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        if digits == self.at {
            return Err(self.err("expected a number"));
        }
        let text = core::str::from_utf8(&self.s[start..self.at]).expect("ASCII digits");
        text.parse().map_err(|_| SchemaParseError {
            at: start,
            what: "number out of range",
        })
    }

    fn node(&mut self, depth: usize) -> Result<TypeSchema, SchemaParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("schema nested too deeply"));
        }
        let seen = self.eat(b'^');
        let name = self.word()?;
        self.expect(b'/', "expected `/` and the size after a name")?;
        let size = self.number()?;
        let size = u64::try_from(size).map_err(|_| self.err("size out of range"))?;
        let kind = if seen {
            SchemaKind::Seen
        } else if self.eat(b'<') {
            let mut args = Vec::new();
            if !self.eat(b'>') {
                loop {
                    let label = self.word()?;
                    self.expect(b'=', "expected `=` after a type argument's label")?;
                    args.push((label, self.node(depth + 1)?));
                    if self.eat(b'>') {
                        break;
                    }
                    self.expect(b',', "expected `,` or `>` after a type argument")?;
                }
            }
            SchemaKind::Generic(args)
        } else if self.eat(b'{') {
            let mut fields = Vec::new();
            if !self.eat(b'}') {
                loop {
                    let label = self.word()?;
                    self.expect(b':', "expected `:` after a field name")?;
                    fields.push((label, self.node(depth + 1)?));
                    if self.eat(b'}') {
                        break;
                    }
                    self.expect(b',', "expected `,` or `}` after a field")?;
                }
            }
            SchemaKind::Struct(fields)
        } else if self.eat(b'(') {
            let mut variants = Vec::new();
            if !self.eat(b')') {
                loop {
                    let label = self.word()?;
                    self.expect(b'=', "expected `=` after a variant name")?;
                    variants.push((label, self.number()?));
                    if self.eat(b')') {
                        break;
                    }
                    self.expect(b',', "expected `,` or `)` after a variant")?;
                }
            }
            SchemaKind::Enum(variants)
        } else {
            SchemaKind::Scalar
        };
        Ok(TypeSchema { name, size, kind })
    }
}

/// Support for `#[derive(Persistent)]`; not part of the public API.
///
/// The derive describes a field through `(&&FieldSchema::<F>::new()).describe_field(d)`: when `F`
/// is `Schema` (every `Persistent` type is) the first impl applies; otherwise method lookup
/// falls back to the second, so that a field that is not `Persistent` gets the one error the
/// derive's `Persistent` check gives, not a second one about `Schema`. (The fallback is never
/// used by a program that compiles: the field check rejects such a field.)
#[doc(hidden)]
pub mod __derive {
    use super::{Describer, PhantomData, Schema, TypeSchema};

    /// A field type to describe.
    #[derive(Debug)]
    pub struct FieldSchema<T: ?Sized>(PhantomData<fn() -> T>);

    impl<T: ?Sized> FieldSchema<T> {
        /// The field type `T`.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            FieldSchema(PhantomData)
        }
    }

    /// Describes a `Schema` field.
    pub trait DescribeField {
        /// The field's schema.
        fn describe_field(&self, d: &mut Describer) -> TypeSchema;
    }

    impl<T: Schema + ?Sized> DescribeField for &FieldSchema<T> {
        fn describe_field(&self, d: &mut Describer) -> TypeSchema {
            d.of::<T>()
        }
    }

    /// The fallback for a field that is not `Schema` (a compile error elsewhere).
    pub trait DescribeOther {
        /// An opaque placeholder.
        fn describe_field(&self, d: &mut Describer) -> TypeSchema;
    }

    impl<T: ?Sized> DescribeOther for FieldSchema<T> {
        fn describe_field(&self, _: &mut Describer) -> TypeSchema {
            TypeSchema::scalar("?", 0)
        }
    }
}

macro_rules! scalar_schemas {
    ($($t:ty),* $(,)?) => {$(
        impl Schema for $t {
            fn describe(_: &mut Describer) -> TypeSchema {
                TypeSchema::scalar(stringify!($t), core::mem::size_of::<$t>())
            }
        }
    )*};
}

scalar_schemas!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

impl Schema for () {
    fn describe(_: &mut Describer) -> TypeSchema {
        TypeSchema::scalar("unit", 0)
    }
}

impl<T: Schema, const N: usize> Schema for [T; N] {
    fn describe(d: &mut Describer) -> TypeSchema {
        TypeSchema::generic(
            &format!("[{N}]"),
            core::mem::size_of::<[T; N]>(),
            vec![("T", d.of::<T>())],
        )
    }
}

impl<T: ?Sized + 'static> Schema for PhantomData<T> {
    fn describe(_: &mut Describer) -> TypeSchema {
        TypeSchema::scalar("PhantomData", 0)
    }
}

impl<T: Schema> Schema for Wrapping<T> {
    fn describe(d: &mut Describer) -> TypeSchema {
        TypeSchema::generic("Wrapping", core::mem::size_of::<T>(), vec![("T", d.of::<T>())])
    }
}

impl<T: Schema> Schema for crate::PPtr<T> {
    fn describe(d: &mut Describer) -> TypeSchema {
        TypeSchema::generic("PPtr", 8, vec![("T", d.of::<T>())])
    }
}

impl Schema for crate::PoolHeader {
    fn describe(_: &mut Describer) -> TypeSchema {
        TypeSchema::scalar("PoolHeader", crate::HEADER_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node;
    impl Schema for Node {
        fn describe(d: &mut Describer) -> TypeSchema {
            d.record::<Self>("Node", 16, |d| {
                vec![
                    ("key".into(), d.of::<u64>()),
                    ("next".into(), d.of::<crate::PPtr<Node>>()),
                ]
            })
        }
    }

    #[test]
    fn self_reference_is_described_once_and_round_trips() {
        let s = schema_of::<Node>();
        assert_eq!(s.encode(), "Node/16{key:u64/8,next:PPtr/8<T=^Node/16>}");
        assert_eq!(TypeSchema::decode(&s.encode()), Ok(s.clone()));
        assert_ne!(s.fingerprint(), schema_of::<[u64; 2]>().fingerprint());
        assert_eq!(schema_of::<[u64; 2]>().short(), "[u64; 2]");
    }

    #[test]
    fn decode_rejects_damage_without_panicking() {
        let text = schema_of::<Node>().encode();
        // A cut either fails or is itself a schema (`Node/1`), which then encodes back to
        // exactly the bytes read.
        for cut in 0..text.len() {
            if let Ok(s) = TypeSchema::decode(&text[..cut]) {
                assert_eq!(s.encode(), &text[..cut], "prefix {cut}");
            }
        }
        assert!(TypeSchema::decode(&text[..text.len() - 1]).is_err());
        let deep = format!(
            "{}u8/1{}",
            "A/1<T=".repeat(MAX_DEPTH + 2),
            ">".repeat(MAX_DEPTH + 2)
        );
        assert_eq!(
            TypeSchema::decode(&deep).unwrap_err().what,
            "schema nested too deeply"
        );
        assert!(TypeSchema::decode("A/99999999999999999999999").is_err());
        assert!(TypeSchema::decode("E/1(a=-5,b=7)").is_ok());
    }

    #[test]
    fn first_difference_names_the_field() {
        let v1 = TypeSchema {
            name: "R".into(),
            size: 16,
            kind: SchemaKind::Struct(vec![
                ("a".into(), schema_of::<u64>()),
                ("b".into(), schema_of::<u64>()),
            ]),
        };
        let mut v2 = v1.clone();
        if let SchemaKind::Struct(f) = &mut v2.kind {
            f[1].1 = schema_of::<[u32; 2]>();
        }
        let d = v2.first_difference(&v1).unwrap();
        assert_eq!((d.at.as_str(), d.stored.as_str()), ("R.b", "u64 (8 bytes)"));
        assert_eq!(d.expected, "[u32; 2] (8 bytes)");
        assert_eq!(v1.first_difference(&v1), None);
    }
}
