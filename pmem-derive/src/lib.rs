//! `#[derive(Persistent)]`: the compile-time checked way to implement `pmem_core::Persistent`.
//!
//! `Persistent` is an `unsafe` marker trait: implementing it promises that every bit pattern of
//! the type is valid, that it has no padding bytes, that it holds no virtual address or volatile
//! resource, and that its layout is fixed. The derive turns each promise into a compile-time
//! check so that user code never writes the `unsafe impl` by hand:
//!
//! - **fixed layout**: the struct must be `#[repr(C)]` or `#[repr(transparent)]`;
//!   `repr(packed)` (fields cannot be referenced safely) and `repr(align(N))` (may add trailing
//!   padding) are rejected;
//! - **valid bit patterns, no pointers, no volatile resources**: every field type must itself be
//!   `Persistent`; the error points at the offending field and carries the trait's explanation;
//! - **no padding**: for `#[repr(C)]` a `const` assertion checks that the size of the struct is
//!   the sum of the sizes of its fields;
//! - a fieldless `#[repr(uN)]` enum gets checked storage instead (`Encoded`, stored through
//!   `Checked<E>`), since not every bit pattern is one of its variants;
//! - unions and structs with lifetime parameters are rejected outright; generic structs are
//!   accepted only when `#[repr(transparent)]` (their layout is that of their one non-zero-sized
//!   field, so no padding check is needed), with a `Field: Persistent` bound for every field.
//!
//! This crate is re-exported as `pmem_core::Persistent` (in the macro namespace, next to the
//! trait); depend on `pmem-core` rather than on this crate directly.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    parse_macro_input, parse_quote, parse_quote_spanned, Data, DeriveInput, Fields, LitStr, Path, Type,
};

/// Derives `pmem_core::Persistent` for a `#[repr(C)]` or `#[repr(transparent)]` struct, and
/// checked storage for a fieldless `#[repr(uN)]` enum (see **Enums** below).
///
/// The derive accepts named, tuple and unit structs whose fields are all `Persistent`, and
/// rejects at compile time, with an error pointing at the cause:
///
/// - enums with fields or without a fixed-width integer `repr`, and unions;
/// - a missing `#[repr(C)]` / `#[repr(transparent)]`, and `repr(packed)` or `repr(align(N))`;
/// - any field whose type is not `Persistent` (references, raw pointers, `Box`, `Vec`, `String`,
///   `Rc`, `Arc`, `File`, `bool`, `char`, `Option<T>`, tuples, non-derived structs, ...);
/// - a `#[repr(C)]` struct with padding bytes (add explicit `_pad: [u8; N]` fields instead);
/// - lifetime parameters (references cannot be stored in persistent memory; use `PPtr<T>`);
/// - generic `#[repr(C)]` structs (the padding check needs a concrete layout: implement
///   `Persistent` manually); generic `#[repr(transparent)]` structs are accepted, with a
///   `Field: Persistent` bound for every field.
///
/// The path of the crate that defines the trait is found from the using crate's Cargo.toml:
/// pmem-core under whatever name it has there, or, for a crate that depends on `ptm` only,
/// `ptm::pmem_core`. Override it with `#[persistent(crate = "some::path")]` when pmem-core is
/// re-exported elsewhere: the path must name `Persistent`, `Encoded` and the module `schema`
/// (pmem-core itself, or a module re-exporting those three).
///
/// Every derive also implements `pmem_core::schema::Schema` (the stored shape that pools record
/// and check at open): a struct as a record of its named fields, each described by its type.
///
/// **Enums.** A fieldless enum with one fixed-width integer `repr` (`#[repr(u8)]`, `u16`, `u32`,
/// `u64`, `i8`, `i16`, `i32`, `i64`) and `Clone + Copy` gets `pmem_core::Encoded` (stored as that
/// integer) and `Schema` (its variants and values), but **not** `Persistent`: a corrupted byte
/// may be no variant. Store it as a `pmem_core::Checked<E>` field, whose `get` decodes it and
/// returns an error for a value no variant has. Generic enums and variants with fields are
/// rejected.
///
/// # Examples
///
/// ```text
/// use pmem_core::{Persistent, PPtr};
///
/// #[derive(Persistent)]
/// #[repr(C)]
/// struct Node {
///     key: u64,
///     len: u32,
///     _pad: [u8; 4], // explicit padding: every byte is a field
///     next: PPtr<Node>,
/// }
///
/// #[derive(Persistent)]
/// #[repr(transparent)]
/// struct Tagged<T>(T);
/// ```
#[proc_macro_derive(Persistent, attributes(persistent))]
pub fn derive_persistent(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `ptm_collections::PValue` and `ptm_collections::PHandle` for a `Persistent` struct
/// of collection handles and cells, so that it can be stored **in place** as a `PVec` or
/// `PQueue` element, a `PHashMap` or `PBTreeMap` value or a `PBox` content, with no `unsafe` in
/// user code: freeing the struct frees every field (`free_owned` calls each field's in
/// declaration order), so no field can be forgotten.
///
/// Every field must be a handle (`PString`, `PVec<T>`, `PHashMap<K, V>`, `PQueue<T>`,
/// `PBox<T>`, `PBTreeMap<K, V>`, or another struct deriving `PValue`) or a `PCell<T>` of a
/// `Copy` value (scalars, `Checked<E>` enums, `PBool`, `POption<T>`, `PPtr<T>`, which is not
/// followed). A plain scalar field (`u64` outside a cell) is refused: a handle's bytes are
/// moved and zeroed by its collection while references to it may exist, which only cells allow.
/// (A struct of plain `Copy` scalars needs no derive: every `Persistent + Copy` type is a
/// `PValue` stored by value.) The struct needs at least one field. Use it together with
/// `#[derive(Persistent)]`.
///
/// The path of ptm-collections is found from the using crate's Cargo.toml (under whatever name
/// it has there).
///
/// ```text
/// #[derive(Persistent, PValue)]
/// #[repr(C)]
/// struct Task {
///     title: PString,
///     tags: PVec<PString>,
///     priority: PCell<u64>,
/// }
/// ```
#[proc_macro_derive(PValue)]
pub fn derive_pvalue(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_pvalue(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand_pvalue(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(data) => &data.fields,
        _ => {
            return Err(syn::Error::new_spanned(
                name,
                "`#[derive(PValue)]` applies to structs of collection handles and cells; an enum \
                 or `Copy` value is already a `PValue` (stored by value)",
            ))
        }
    };
    if fields.is_empty() {
        return Err(syn::Error::new_spanned(
            name,
            "`#[derive(PValue)]` needs at least one field (a handle struct must not be `Sync`, \
             and its cells make sure of that)",
        ));
    }
    let krate = collections_path();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| parse_quote!(where));
    let mut field_checks = TokenStream2::new();
    for field in fields {
        let ty = &field.ty;
        if input.generics.params.is_empty() {
            // A concrete field type: checked by a call spanned at the field, so that the error
            // points at it (a bound on a concrete type would be reported at the derive).
            field_checks.extend(quote_spanned! {ty.span()=>
                __field::<#ty>();
            });
        } else {
            where_clause
                .predicates
                .push(parse_quote_spanned!(ty.span()=> #ty: #krate::__derive::HandleField));
        }
    }
    let field_checks = (!field_checks.is_empty()).then(|| {
        quote! {
            const _: () = {
                fn __field<T: #krate::__derive::HandleField + ?::core::marker::Sized>() {}
                fn __fields() {
                    #field_checks
                }
            };
        }
    });
    let members: Vec<syn::Member> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| match &f.ident {
            Some(ident) => syn::Member::Named(ident.clone()),
            None => syn::Member::Unnamed(syn::Index::from(i)),
        })
        .collect();
    let tys: Vec<&Type> = fields.iter().map(|f| &f.ty).collect();
    Ok(quote! {
        impl #impl_generics #krate::PValue for #name #ty_generics #where_clause {
            const OWNS: bool = false #(|| <#tys as #krate::__derive::HandleField>::OWNS)*;

            unsafe fn free_owned(
                &self,
                tx: &#krate::__derive::Transaction<'_>,
            ) -> #krate::__derive::Result<()> {
                #(
                    // SAFETY: the caller discards `self` in this transaction, and with it
                    // every field.
                    unsafe { <#tys as #krate::__derive::HandleField>::free_field(&self.#members, tx)? };
                )*
                ::core::result::Result::Ok(())
            }
        }

        // SAFETY: every field is a `HandleField` (a handle or a `PCell` of a `Copy` value):
        // every byte of each is inside a `PCell`, and `#[derive(Persistent)]` rules out padding,
        // so every byte of the struct is; all-zero fields are empty and own nothing; the
        // struct has a field, and every field is `!Sync`, so it is `!Sync`; no field's blocks
        // record where the field is, so the struct moves by copying its bytes.
        unsafe impl #impl_generics #krate::PHandle for #name #ty_generics #where_clause {}

        #field_checks
    })
}

/// The path of ptm-collections as the crate being compiled sees it.
fn collections_path() -> syn::Path {
    use proc_macro_crate::{crate_name, FoundCrate};
    match crate_name("ptm-collections") {
        Ok(FoundCrate::Name(name)) => {
            let ident = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
            parse_quote!(::#ident)
        }
        // Inside ptm-collections (its tests and doctests too): `extern crate self as
        // ptm_collections` makes the absolute path work.
        Ok(FoundCrate::Itself) | Err(_) => parse_quote!(::ptm_collections),
    }
}

/// The layout requested by the struct's `#[repr(...)]` attributes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repr {
    C,
    Transparent,
}

const ENUM_REPR_ERROR: &str = "`#[derive(Persistent)]` on an enum requires exactly one \
    fixed-width integer representation (`#[repr(u8)]`, `u16`, `u32`, `u64`, `i8`, `i16`, `i32` or \
    `i64`): the enum is stored as that integer, whose size must not depend on the platform";

const UNION_ERROR: &str = "`#[derive(Persistent)]` cannot be used on a union: which field is \
    valid, and whether the other bytes are padding, is not known at compile time; use a \
    `#[repr(C)]` struct, or implement `Persistent` manually";

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(data) => &data.fields,
        Data::Enum(data) => return expand_enum(input, data),
        Data::Union(_) => return Err(syn::Error::new_spanned(name, UNION_ERROR)),
    };

    let mut errors = Errors::default();
    let krate = errors.check(crate_path(input)).flatten();
    let repr = errors.check(repr(input)).flatten();
    errors.check(check_field_attrs(fields));
    errors.check(check_generics(input, repr));
    errors.finish()?;

    let krate = krate.unwrap_or_else(default_crate_path);
    let repr = repr.expect("a missing repr is reported as an error");
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();

    if input.generics.params.is_empty() {
        // Field types may name the struct as `Self` (e.g. `next: PPtr<Self>`); the checks below
        // are outside the impl, so spell it out.
        let field_tys: Vec<Type> = fields
            .iter()
            .map(|field| {
                let mut ty = field.ty.clone();
                ReplaceSelf(name).visit_type_mut(&mut ty);
                ty
            })
            .collect();
        // Naming each field's `__LAYOUT_CHECK` both requires `Field: Persistent` (the error
        // points at the field and carries the trait's explanation) and makes the struct's own
        // check include its fields' (e.g. a `PMutex<u8>` field with inner padding).
        let field_checks = field_tys.iter().map(|ty| {
            quote_spanned! {ty.span()=>
                let () = <#ty as #krate::Persistent>::__LAYOUT_CHECK;
            }
        });
        let padding_check = match repr {
            // A transparent struct has the layout of its one non-zero-sized field, which is
            // checked to be `Persistent` and so has no padding: nothing more to assert.
            Repr::Transparent => None,
            Repr::C => {
                let message = LitStr::new(
                    &format!(
                        "struct `{name}` has padding bytes: its size is larger than the sum of \
                         its field sizes, and padding is uninitialised memory that cannot be \
                         stored, logged or checksummed; add explicit padding fields (e.g. \
                         `_pad: [u8; N]`) so every byte is a field"
                    ),
                    name.span(),
                );
                // The sum keeps the macro's own spans so that lints such as `identity_op`
                // (`0 + ...`) see generated code; the assertion points at the struct's name.
                let field_bytes = quote! { 0 #(+ ::core::mem::size_of::<#field_tys>())* };
                Some(quote_spanned! {name.span()=>
                    const _: () = ::core::assert!(
                        ::core::mem::size_of::<#name>() == #field_bytes,
                        #message
                    );
                })
            }
        };
        let schema = schema_impl(&krate, input, fields, &field_tys, None);
        Ok(quote! {
            unsafe impl #krate::Persistent for #name {
                const __LAYOUT_CHECK: () = {
                    #(#field_checks)*
                };
            }

            #schema

            const _: () = <#name as #krate::Persistent>::__LAYOUT_CHECK;

            #padding_check
        })
    } else {
        // Generic `repr(transparent)` (checked above): the bounds make the impl hold exactly when
        // every field is `Persistent`, and the layout is that of the one non-zero-sized field.
        let mut where_clause = where_clause.cloned().unwrap_or_else(|| parse_quote!(where));
        for field in fields {
            let ty = &field.ty;
            where_clause
                .predicates
                .push(parse_quote_spanned!(ty.span()=> #ty: #krate::Persistent));
        }
        let field_tys: Vec<Type> = fields.iter().map(|f| f.ty.clone()).collect();
        let schema = schema_impl(&krate, input, fields, &field_tys, Some(&where_clause));
        Ok(quote! {
            unsafe impl #impl_generics #krate::Persistent for #name #ty_generics #where_clause {
                const __LAYOUT_CHECK: () = {
                    #(let () = <#field_tys as #krate::Persistent>::__LAYOUT_CHECK;)*
                };
            }

            #schema
        })
    }
}

/// `impl Schema` for a struct: a record of its fields, named as declared (`0`, `1`, ... for a
/// tuple struct), each described by its own `Schema`.
fn schema_impl(
    krate: &Path,
    input: &DeriveInput,
    fields: &Fields,
    field_tys: &[Type],
    where_clause: Option<&syn::WhereClause>,
) -> TokenStream2 {
    let name = &input.ident;
    let name_str = LitStr::new(&name.to_string(), name.span());
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let labels = fields.iter().enumerate().map(|(i, f)| match &f.ident {
        Some(ident) => LitStr::new(&ident.unraw().to_string(), ident.span()),
        None => LitStr::new(&i.to_string(), f.ty.span()),
    });
    quote! {
        impl #impl_generics #krate::schema::Schema for #name #ty_generics #where_clause {
            fn describe(
                d: &mut #krate::schema::Describer,
            ) -> #krate::schema::TypeSchema {
                #[allow(unused_imports)]
                use #krate::schema::__derive::{DescribeField as _, DescribeOther as _};
                d.record::<Self>(#name_str, ::core::mem::size_of::<Self>(), |d| {
                    ::std::vec![#((
                        ::std::string::String::from(#labels),
                        (&&#krate::schema::__derive::FieldSchema::<#field_tys>::new()).describe_field(d),
                    )),*]
                })
            }
        }
    }
}

/// A fieldless enum with a fixed-width integer `repr`: stored as that integer through
/// `Checked<E>` (`Encoded`, whose `decode` refuses a value that is no variant), and described as
/// an enum schema. It is *not* `Persistent`: not every bit pattern is a variant.
fn expand_enum(input: &DeriveInput, data: &syn::DataEnum) -> syn::Result<TokenStream2> {
    let name = &input.ident;
    let mut errors = Errors::default();
    let krate = errors.check(crate_path(input)).flatten();
    let repr = errors.check(enum_repr(input));
    if !input.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &input.generics,
            "`#[derive(Persistent)]` does not accept generic enums",
        ));
    }
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            errors.push(syn::Error::new_spanned(
                variant,
                "`#[derive(Persistent)]` accepts only fieldless enums (stored as their \
                 discriminant); store data of a variant in struct fields beside it",
            ));
        }
        for attr in variant.attrs.iter().filter(|a| a.path().is_ident("persistent")) {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[persistent(...)]` is not supported on variants",
            ));
        }
    }
    errors.finish()?;
    let krate = krate.unwrap_or_else(default_crate_path);
    let repr = repr.expect("a bad repr is reported as an error");
    let name_str = LitStr::new(&name.to_string(), name.span());
    let variants: Vec<&syn::Ident> = data.variants.iter().map(|v| &v.ident).collect();
    let labels = variants
        .iter()
        .map(|v| LitStr::new(&v.unraw().to_string(), v.span()));
    Ok(quote! {
        impl #krate::schema::Schema for #name {
            fn describe(
                _: &mut #krate::schema::Describer,
            ) -> #krate::schema::TypeSchema {
                #krate::schema::TypeSchema::enumeration(
                    #name_str,
                    ::core::mem::size_of::<#repr>(),
                    ::std::vec![#((#labels, #name::#variants as #repr as i128)),*],
                )
            }
        }

        impl #krate::Encoded for #name {
            type Raw = #repr;

            fn encode(self) -> #repr {
                self as #repr
            }

            fn decode(raw: #repr) -> ::core::option::Option<Self> {
                #(
                    if raw == #name::#variants as #repr {
                        return ::core::option::Option::Some(#name::#variants);
                    }
                )*
                ::core::option::Option::None
            }
        }
    })
}

/// The integer type of an enum's `#[repr(uN)]`.
fn enum_repr(input: &DeriveInput) -> syn::Result<Type> {
    let mut found: Vec<syn::Ident> = Vec::new();
    let mut other = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        attr.parse_nested_meta(|meta| {
            match meta.path.get_ident() {
                Some(id)
                    if ["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64"]
                        .contains(&id.to_string().as_str()) =>
                {
                    found.push(id.clone())
                }
                _ => {
                    skip_args(&meta)?;
                    other = true;
                }
            }
            Ok(())
        })?;
    }
    match found.as_slice() {
        [one] if !other => Ok(parse_quote!(#one)),
        _ => Err(syn::Error::new_spanned(&input.ident, ENUM_REPR_ERROR)),
    }
}

/// The path of pmem-core as the crate being compiled sees it, from its Cargo.toml: `pmem-core`
/// under the name it is given there, else `ptm`'s re-export `::ptm::pmem_core`, else
/// `::pmem_core`. (Inside pmem-core itself, including its doctests and tests, `::pmem_core`:
/// the library declares `extern crate self as pmem_core`.)
fn default_crate_path() -> syn::Path {
    use proc_macro_crate::{crate_name, FoundCrate};
    match crate_name("pmem-core") {
        Ok(FoundCrate::Name(name)) => {
            let ident = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
            parse_quote!(::#ident)
        }
        Ok(FoundCrate::Itself) => parse_quote!(::pmem_core),
        Err(_) => match crate_name("ptm") {
            Ok(FoundCrate::Name(name)) => {
                let ident = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
                parse_quote!(::#ident::pmem_core)
            }
            Ok(FoundCrate::Itself) => parse_quote!(::ptm::pmem_core),
            Err(_) => parse_quote!(::pmem_core),
        },
    }
}

/// Reads `#[persistent(crate = "path")]`, if present.
fn crate_path(input: &DeriveInput) -> syn::Result<Option<Path>> {
    let mut path = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("persistent")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                if path.is_some() {
                    return Err(meta.error("duplicate `crate` in `#[persistent(...)]`"));
                }
                let lit: LitStr = meta.value()?.parse()?;
                path = Some(lit.parse::<Path>()?);
                Ok(())
            } else {
                Err(meta.error("unknown `#[persistent(...)]` option; the only option is `crate = \"path\"`"))
            }
        })?;
    }
    Ok(path)
}

/// Reads every `#[repr(...)]` attribute and checks that together they ask for `C` or
/// `transparent` and nothing that adds padding or unaligned fields.
fn repr(input: &DeriveInput) -> syn::Result<Option<Repr>> {
    let mut repr = None;
    let mut errors = Errors::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        let parsed = attr.parse_nested_meta(|meta| {
            let path = &meta.path;
            if path.is_ident("C") {
                repr = Some(Repr::C);
            } else if path.is_ident("transparent") {
                repr = Some(Repr::Transparent);
            } else if path.is_ident("packed") {
                skip_args(&meta)?;
                errors.push(syn::Error::new_spanned(
                    path,
                    "`#[derive(Persistent)]` does not accept `repr(packed)`: fields of a packed \
                     struct may be unaligned and cannot be referenced safely; use `#[repr(C)]` \
                     and add explicit padding fields (e.g. `_pad: [u8; N]`) instead",
                ));
            } else if path.is_ident("align") {
                skip_args(&meta)?;
                errors.push(syn::Error::new_spanned(
                    path,
                    "`#[derive(Persistent)]` does not accept `repr(align(N))`: raising the \
                     alignment can add trailing padding bytes; add explicit padding fields \
                     (e.g. `_pad: [u8; N]`) instead, or align a field",
                ));
            } else {
                skip_args(&meta)?;
                errors.push(syn::Error::new_spanned(
                    path,
                    format!(
                        "`#[derive(Persistent)]` does not accept `repr({})`: use `#[repr(C)]` \
                         or `#[repr(transparent)]`",
                        path.to_token_stream()
                    ),
                ));
            }
            Ok(())
        });
        errors.check(parsed);
    }
    if repr.is_none() {
        errors.push(syn::Error::new_spanned(
            &input.ident,
            format!(
                "`#[derive(Persistent)]` requires `#[repr(C)]` or `#[repr(transparent)]` on \
                 `{}`: the default Rust layout is unspecified and may differ between the builds \
                 that open the same pool",
                input.ident
            ),
        ));
    }
    errors.finish()?;
    Ok(repr)
}

/// Consumes a parenthesised argument list such as the `(8)` of `align(8)`.
fn skip_args(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::token::Paren) {
        let args;
        syn::parenthesized!(args in meta.input);
        args.parse::<TokenStream2>()?;
    }
    Ok(())
}

/// The derive has no field options; reject `#[persistent]` on fields rather than ignore it.
fn check_field_attrs(fields: &Fields) -> syn::Result<()> {
    let mut errors = Errors::default();
    for attr in fields.iter().flat_map(|f| &f.attrs) {
        if attr.path().is_ident("persistent") {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[persistent(...)]` is not supported on fields; it only takes \
                 `crate = \"path\"` on the struct",
            ));
        }
    }
    errors.finish()
}

/// Rejects lifetime parameters, and type or const parameters on anything but
/// `#[repr(transparent)]`.
fn check_generics(input: &DeriveInput, repr: Option<Repr>) -> syn::Result<()> {
    let mut errors = Errors::default();
    for lifetime in input.generics.lifetimes() {
        errors.push(syn::Error::new_spanned(
            lifetime,
            "`#[derive(Persistent)]` does not accept lifetime parameters: references cannot be \
             stored in persistent memory, because their addresses are meaningless once the pool \
             is reopened; use `PPtr<T>` to link to data inside the pool",
        ));
    }
    if repr == Some(Repr::C) {
        let layout_param = input
            .generics
            .params
            .iter()
            .find(|p| !matches!(p, syn::GenericParam::Lifetime(_)));
        if let Some(param) = layout_param {
            errors.push(syn::Error::new_spanned(
                param,
                format!(
                    "`#[derive(Persistent)]` cannot check a generic `#[repr(C)]` struct: whether \
                     `{}` has padding bytes depends on its parameters; make it \
                     `#[repr(transparent)]` over a single `Persistent` field, or implement \
                     `Persistent` manually (`unsafe impl`) for each concrete instantiation",
                    input.ident
                ),
            ));
        }
    }
    errors.finish()
}

/// Replaces the type `Self` (alone or as the head of a path) by the struct's name.
struct ReplaceSelf<'a>(&'a syn::Ident);

impl VisitMut for ReplaceSelf<'_> {
    fn visit_path_mut(&mut self, path: &mut Path) {
        if path.leading_colon.is_none() {
            if let Some(first) = path.segments.first_mut() {
                if first.ident == "Self" {
                    first.ident = syn::Ident::new(&self.0.to_string(), first.ident.span());
                }
            }
        }
        syn::visit_mut::visit_path_mut(self, path);
    }

    fn visit_item_mut(&mut self, _item: &mut syn::Item) {
        // Items nested in a type (inside an array length block) have their own `Self`.
    }
}

/// Collects several independent errors so that one compile reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn check<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
