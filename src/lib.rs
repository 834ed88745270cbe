//! ipfs-cluster-bootstrap: starts IPFS Cluster peers safely on AWS.
//!
//! Flow: config → local peer → self address → register/discover → probe →
//! decide → apply → launch. `decide` is the pure core; every other module is a
//! thin shell around it, and `cmd` is the sequencer. See ARCHITECTURE.md.

pub mod apply;
#[cfg(feature = "aws")]
pub mod aws_http;
pub mod cli;
#[cfg(feature = "aws")]
pub mod cmd;
pub mod config;
pub mod contact;
pub mod daemon_args;
pub mod daemon_env;
pub mod decide;
pub mod discovery;
#[cfg(feature = "aws")]
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
#[cfg(feature = "aws")]
pub mod reaper;
pub mod rest;
#[cfg(feature = "aws")]
pub mod retire;
pub mod rounds;
pub mod selfaddr;
pub mod slot;
pub mod stateroot;
pub mod view;
pub mod watchdog;
