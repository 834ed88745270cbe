//! ipfs-cluster-bootstrap: starts IPFS Cluster peers safely on AWS.
//!
//! Flow: config → local peer → self address → register/discover → probe →
//! decide → apply → launch. `decide` is the pure core; every other module is a
//! thin shell around it, and `app` is the only sequencer. See ARCHITECTURE.md.

pub mod apply;
pub mod aws_http;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod contact;
pub mod daemon_args;
pub mod daemon_env;
pub mod decide;
pub mod discovery;
pub mod ecs;
pub mod exit;
pub mod genesis;
pub mod iam;
pub mod identity;
pub mod launch;
pub mod local;
pub mod peer;
pub mod privileges;
pub mod probe;
pub mod raftstate;
pub mod reaper;
pub mod rest;
pub mod retire;
pub mod rounds;
pub mod selfaddr;
pub mod slot;
pub mod stateroot;
pub mod view;
pub mod watchdog;
