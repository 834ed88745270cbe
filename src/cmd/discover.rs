//! `discover`: what the backend lists and what probing finds, as JSON.

use serde::Serialize;

use crate::discovery::{Discovered, Registry};
use crate::exit::Error;
use crate::probe::{Probed, Prober};
use crate::view::Observed;

/// `discover`: what the backend lists and what probing finds, as JSON.
pub(super) async fn main<R: Registry>(registry: &R, prober: &Prober) -> Result<i32, Error> {
    let Discovered { registrations, skipped } = registry.discover().await?;
    let Probed {
        observed: peers,
        unidentified,
        silent,
        not_probed,
    } = prober.probe_all(registrations).await;
    #[derive(Serialize)]
    struct Out<'a> {
        discovery: &'a str,
        peers: Vec<Observed>,
        unidentified: Vec<std::net::IpAddr>,
        silent: Vec<std::net::IpAddr>,
        /// Not a loopback address under --loopback-only.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        not_probed: Vec<std::net::IpAddr>,
        skipped: Vec<String>,
    }
    super::print_json(&Out {
        discovery: registry.name(),
        peers,
        unidentified,
        silent,
        not_probed,
        skipped,
    });
    Ok(0)
}
