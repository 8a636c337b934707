//! Guards compile-time rejection at the ptm layer: lock wrappers whose contents would leave
//! padding are refused, well-formed roots with cells and locks compile.

#[test]
fn ui() {
    let _serial = crate::serial();
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail_*.rs");
    t.pass("tests/ui/pass_*.rs");
}
