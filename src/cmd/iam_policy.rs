//! `iam-policy`: the IAM policy the task role needs for this configuration.

use tracing::info;

use crate::config::Config;
use crate::exit::Error;
use crate::iam;

pub(super) fn main(cfg: &Config) -> Result<i32, Error> {
    if iam::actions(cfg).is_empty() {
        info!("this configuration calls no AWS API: the task role needs no permission");
    }
    super::print_json(&iam::policy(cfg));
    Ok(0)
}
