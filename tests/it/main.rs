//! Integration tests: the real binary, moto's server and the ipfs-cluster-service
//! test double, all on loopback addresses.

mod support;

mod aws;
mod bad_input;
mod deploy;
mod docs;
mod failures;
mod launches;
mod paths;
mod shipped;
mod state_root;
