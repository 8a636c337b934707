//! Shared helpers for the ptm benchmarks.
