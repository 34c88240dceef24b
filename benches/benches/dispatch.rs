//! Criterion benches: the scenarios of `watchbench` at small sizes, both engines side by side.
//! `WATCHBENCH_SCALE=10` multiplies every size (and the run time).
fn main() {}
