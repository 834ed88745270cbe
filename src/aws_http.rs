//! The one HTTP client every AWS call uses (SDK clients, credential
//! providers, IMDS): hyper 1, and rustls with ring for `https`.
//!
//! A TLS connector reads the system's root certificates when it is first
//! built (about 150 files under /etc/ssl/certs, several milliseconds at every
//! start). A plain `http://` call (an endpoint on a private network, the ECS
//! credentials endpoint, IMDS, a local test endpoint) never needs them, so
//! the client picks its connector per request: plain HTTP goes through one
//! with an empty trust store, and the root certificates are read only for
//! the first `https://` call.

use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

pub fn client() -> SharedHttpClient {
    SharedHttpClient::new(ByScheme {
        http: trusting(TrustStore::empty()),
        https: trusting(TrustStore::default()),
    })
}

/// The SDK's hyper and rustls client with this trust store. Both schemes use
/// the same connector type (it passes `http://` through without TLS), so the
/// second client adds no code to the binary, only a trust store that stays
/// empty for plain HTTP.
fn trusting(store: TrustStore) -> SharedHttpClient {
    let context = TlsContext::builder()
        .with_trust_store(store)
        .build()
        .unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_https()
}

/// Two clients, one per scheme. Each caches its connectors (and so its
/// connection pool) per connector settings, as the SDK expects of a client.
#[derive(Debug)]
struct ByScheme {
    http: SharedHttpClient,
    https: SharedHttpClient,
}

impl HttpClient for ByScheme {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(SchemeConnector {
            http: self.http.clone(),
            https: self.https.clone(),
            settings: settings.clone(),
            components: components.clone(),
        })
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.https.connector_metadata()
    }
}

#[derive(Debug)]
struct SchemeConnector {
    http: SharedHttpClient,
    https: SharedHttpClient,
    settings: HttpConnectorSettings,
    components: RuntimeComponents,
}

impl HttpConnector for SchemeConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = if is_plain_http(request.uri()) {
            &self.http
        } else {
            &self.https
        };
        client.http_connector(&self.settings, &self.components).call(request)
    }
}

/// Only an explicit `http://` goes without TLS; anything else (https, or a
/// URI the TLS connector then refuses) takes the TLS connector.
fn is_plain_http(uri: &str) -> bool {
    uri.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

#[cfg(test)]
mod tests {
    use super::is_plain_http;

    #[test]
    fn only_explicit_http_goes_without_tls() {
        assert!(is_plain_http("http://127.0.0.1:5000/"));
        assert!(is_plain_http("HTTP://169.254.170.2/v2/credentials"));
        assert!(!is_plain_http("https://servicediscovery.eu-west-1.amazonaws.com/"));
        assert!(!is_plain_http("http:/x"));
        assert!(!is_plain_http(""));
    }
}
