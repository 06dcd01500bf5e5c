//! Type-level guarantees, checked by making sure the wrong code does not compile.

#[test]
fn type_guarantees() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
