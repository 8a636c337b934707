//! The `ptm` command-line tool.
fn main() {}
