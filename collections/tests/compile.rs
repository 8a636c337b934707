//! Guards `#[derive(PValue)]` at compile time: a struct of strings, vectors and cells becomes a
//! map value and vector element with no `unsafe` (the pass case forbids it); a plain scalar
//! field, an empty struct and a struct that is not `Persistent` are refused with errors that
//! say what to use instead.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail_*.rs");
    t.pass("tests/ui/pass_*.rs");
}
