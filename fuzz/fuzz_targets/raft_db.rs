#![no_main]

#[path = "../bodies.rs"]
#[allow(dead_code)] // each target runs one of the shared bodies
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::raft_db(data));
