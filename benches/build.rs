//! Build script of ptm-benches: with the `pmdk` feature, compiles the C code over libpmemobj
//! (`csrc/pmdk_shim.c`, the transaction and allocator shim, and `csrc/pmdk_collections.c`, the
//! hash map and B+ tree peers of the collections benchmark) and links libpmemobj and libpmem.
//! Without it, does nothing, so the crate builds on machines without PMDK.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "pmdk")]
    pmdk();
}

#[cfg(feature = "pmdk")]
fn pmdk() {
    println!("cargo:rerun-if-changed=csrc/pmdk_shim.c");
    println!("cargo:rerun-if-changed=csrc/pmdk_collections.c");
    cc::Build::new()
        .file("csrc/pmdk_shim.c")
        .file("csrc/pmdk_collections.c")
        .std("c11")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .compile("ptm_pmdk_shim");
    // After the C code, so a linker that drops unneeded libraries sees its references first.
    println!("cargo:rustc-link-lib=pmemobj");
    println!("cargo:rustc-link-lib=pmem");
}
