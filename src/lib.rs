//! ipfs-cluster-bootstrap: starts IPFS Cluster peers safely on AWS.
//!
//! Flow: config → local peer → self address → register/discover → probe →
//! decide → apply → launch. `decide` is the pure core; every other module is a
//! thin shell around it. See ARCHITECTURE.md.

pub mod decide;
pub mod peer;
