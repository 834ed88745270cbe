//! What an AWS SDK error means for a backend: the kind (and so the exit
//! code) and the IAM action to grant. Every SDK crate shares these error
//! types, so Cloud Map, EC2 and ECS map their errors here.

use super::{DiscoveryError, ErrorKind};

/// What an AWS SDK error means for us, naming the IAM action.
pub fn sdk_error<E, R>(
    backend: &'static str,
    action: &'static str,
    e: aws_sdk_servicediscovery::error::SdkError<E, R>,
) -> DiscoveryError
where
    E: aws_sdk_servicediscovery::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_servicediscovery::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
    if no_credentials(&e) {
        return DiscoveryError {
            backend,
            action,
            kind: ErrorKind::NoCredentials,
            detail: "none in the SDK's chain (environment variables, profile, web identity token, ECS task \
                     role, EC2 instance profile)"
                .into(),
        };
    }
    let kind = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Unreachable,
        _ => match e.code().unwrap_or_default() {
            "AccessDenied"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "InvalidClientTokenId"
            | "UnauthorizedOperation"
            | "AuthFailure" => ErrorKind::AccessDenied,
            "RequestLimitExceeded" | "ThrottlingException" | "Throttling" | "TooManyRequestsException" => {
                ErrorKind::Throttled
            }
            "NamespaceNotFound" | "ServiceNotFound" | "ClusterNotFoundException" | "ServiceNotFoundException" => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Other,
        },
    };
    DiscoveryError {
        backend,
        action,
        kind,
        detail: DisplayErrorContext(&e).to_string(),
    }
}

/// Whether the SDK failed for want of credentials (its dispatch error wraps
/// the credential chain's error).
fn no_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<aws_credential_types::provider::error::CredentialsError>() {
            return matches!(
                c,
                aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_)
            );
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::code;
    use aws_sdk_servicediscovery::error::ErrorMetadata;
    use aws_sdk_servicediscovery::error::SdkError;
    use aws_sdk_servicediscovery::operation::discover_instances::DiscoverInstancesError;

    fn service_error(code: &str) -> DiscoveryError {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        let err = DiscoverInstancesError::generic(meta);
        sdk_error(
            "cloudmap",
            "servicediscovery:DiscoverInstances",
            SdkError::service_error(err, ()),
        )
    }

    #[test]
    fn sdk_errors_map_to_kinds_and_exit_codes() {
        for (code, kind, exit) in [
            ("AccessDeniedException", ErrorKind::AccessDenied, code::NOPERM),
            ("UnauthorizedOperation", ErrorKind::AccessDenied, code::NOPERM),
            ("RequestLimitExceeded", ErrorKind::Throttled, code::UNAVAILABLE),
            ("ThrottlingException", ErrorKind::Throttled, code::UNAVAILABLE),
            ("NamespaceNotFound", ErrorKind::NotFound, code::CONFIG),
            ("SomethingElse", ErrorKind::Other, code::UNAVAILABLE),
        ] {
            let e = service_error(code);
            assert_eq!((e.kind, e.exit_code()), (kind, exit), "{code}");
        }
        let e = service_error("AccessDeniedException");
        assert!(
            e.to_string()
                .contains("grant servicediscovery:DiscoverInstances to the task role"),
            "{e}"
        );
    }
}
