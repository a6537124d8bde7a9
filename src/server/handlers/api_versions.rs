//! ApiVersions: the versions tusk serves. Runs on: the connection's shard.

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::ResponseKind;

use crate::protocol::{versions, ErrorCode};

fn api_keys() -> Vec<ApiVersion> {
    versions::SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub fn handle() -> ResponseKind {
    ResponseKind::ApiVersions(ApiVersionsResponse::default().with_api_keys(api_keys()))
}

/// The answer to an ApiVersions version we do not serve, encoded as v0 so any client reads it.
pub fn unsupported() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(ErrorCode::UnsupportedVersion.code())
            .with_api_keys(api_keys()),
    )
}
