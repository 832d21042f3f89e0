//! With the `verbs` feature, compiles the C layer over libibverbs
//! (`src/verbs/shim.c`) against the system's <infiniband/verbs.h>.

fn main() {
    println!("cargo:rerun-if-changed=src/verbs/shim.c");
    #[cfg(feature = "verbs")]
    cc::Build::new()
        .file("src/verbs/shim.c")
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-Wno-unused-parameter")
        .compile("weft_verbs_shim");
}
