//! Builds the small C shim for Redis-exact float parsing and printing
//! (see `csrc/numeric.c` for why it is C).
fn main() {
    println!("cargo:rerun-if-changed=csrc/numeric.c");
    cc::Build::new().file("csrc/numeric.c").opt_level(2).compile("minikv_numeric");
}
