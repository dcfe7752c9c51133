//! The local HTTP JSON API (loopback only, operator token required).
//!
//! Every request passes the access control of [`auth`] first: an allowed `Host` and no
//! foreign `Origin` (else 403), `Authorization: Bearer <token>` (else 401; `GET /metrics`
//! is exempt while `rpc.metrics_public = true`), `Content-Type: application/json` on any
//! body (else 415), at most [`auth::MAX_BODY_BYTES`] of body (else 413). The token is in
//! `<data_dir>/rpc-token` by default:
//!
//! ```sh
//! curl -H "Authorization: Bearer $(cat data/rpc-token)" http://127.0.0.1:8645/status
//! ```
//!
//! | method and path | body | answer |
//! | --- | --- | --- |
//! | `GET /status` | | node id, epoch, block producer, committed pool (members, L1 height), latest confirmed L1 height, what the node does about membership, key |
//! | `GET /key` | | the default key: `{key_id, generation, public_key, address, committee, threshold}` or 404 |
//! | `POST /sign` | `{"digest": "0x" + 64 hex}` | with the default key: `{r, s, v, recovery_id, signature, signers, skipped, address, digest, generation}`; **403 unless `rpc.unsafe_raw_digest_signing = true`** (and peers sign only with their own flag on) |
//! | `DELETE /key[?force=true]` | | deletes this node's share of the default key |
//! | `GET /keys` | | every key this node serves: `[{key_id, role, inbox, registered_address, pool_version, membership, key, ...}]` |
//! | `GET /keys/{id}` | | one key, as in `GET /keys`; 404 if this node serves no such key |
//! | `POST /keys/{id}/sign` | as `POST /sign` | as `POST /sign`, with key `id` |
//! | `DELETE /keys/{id}[?force=true]` | | as `DELETE /key`, for key `id` |
//! | `GET /metrics` | | Prometheus text |
//!
//! There is no endpoint that changes membership: the pool is the set of sequencers with
//! stake locked on L1, and a node reshares only to what L1 records (see
//! [`crate::coordinator`]). Keygen is automatic once enough sequencers are locked.
//!
//! Errors are `{"error": "..."}` with 401, 403, 413 or 415 (access control, above; 403 also for switched-off raw-digest signing), 400 (malformed input), 404 (no key), 409 (state
//! conflict), 422 (pool rule violated), 502 (a peer refused), 504 (a peer timed out) or
//! 500.

pub mod auth;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::coordinator::{KeyNode, Node};
use crate::error::{Error, Result};

/// An API error: status code and message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::BadRequest(_) | Error::ConfigInvalid { .. } => StatusCode::BAD_REQUEST,
            Error::NoKey(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Disabled(_) => StatusCode::FORBIDDEN,
            Error::NotWhitelisted(_)
            | Error::StakeTooLow { .. }
            | Error::StakeTooHigh { .. }
            | Error::AlreadyMember(_)
            | Error::NotMember(_)
            | Error::PoolFull { .. }
            | Error::PoolTooSmall { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Rejected { .. } | Error::InvalidProposal { .. } => StatusCode::BAD_GATEWAY,
            Error::Tss(
                tss_core::TssError::Timeout { .. } | tss_core::TssError::Unresponsive { .. },
            ) => StatusCode::GATEWAY_TIMEOUT,
            Error::Tss(tss_core::TssError::NotEnoughSigners { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = std::result::Result<Response, ApiError>;

fn bad(node: &Node, msg: impl Into<String>) -> ApiError {
    node.metrics().bad_request();
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn counted(node: &Node, e: Error) -> ApiError {
    let api = ApiError::from(e);
    if api.0.is_client_error() {
        node.metrics().bad_request();
    }
    api
}

/// Parses a 32-byte digest: `0x` + 64 hex digits (the `0x` is optional).
pub fn parse_digest(s: &str) -> Result<[u8; 32]> {
    let hex_part = s.strip_prefix("0x").unwrap_or(s);
    let bytes =
        hex::decode(hex_part).map_err(|_| Error::BadRequest(format!("digest {s:?} is not hex")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        Error::BadRequest(format!(
            "digest must be 32 bytes (64 hex digits), got {} bytes",
            b.len()
        ))
    })
}

fn parse_body<'a, T: Deserialize<'a>>(
    node: &Node,
    body: &'a [u8],
) -> std::result::Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(node, format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    digest: String,
}

async fn status(State(node): State<Node>) -> Response {
    Json(node.status()).into_response()
}

async fn key(State(node): State<Node>) -> ApiResult {
    match node.key() {
        Some(k) => Ok(Json(k).into_response()),
        None => Err(ApiError::from(Error::NoKey(node.key_id().to_string()))),
    }
}

/// The key `id`, or a 404 naming it.
fn key_named(node: &Node, id: &str) -> std::result::Result<KeyNode, ApiError> {
    node.key_node(id).ok_or_else(|| {
        counted(
            node,
            Error::NoKey(format!("{id} (this node serves no such key)")),
        )
    })
}

async fn keys(State(node): State<Node>) -> Response {
    let keys: Vec<_> = node.keys().iter().map(KeyNode::status).collect();
    Json(keys).into_response()
}

async fn key_status(State(node): State<Node>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(key_named(&node, &id)?.status()).into_response())
}

async fn sign(State(node): State<Node>, body: Bytes) -> ApiResult {
    sign_with(&node, &node.default_key(), &body).await
}

async fn sign_key(State(node): State<Node>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let key = key_named(&node, &id)?;
    sign_with(&node, &key, &body).await
}

async fn sign_with(node: &Node, key: &KeyNode, body: &[u8]) -> ApiResult {
    let node = node.clone();
    let req: SignRequest = parse_body(&node, body)?;
    let digest = parse_digest(&req.digest).map_err(|e| counted(&node, e))?;
    let out = key.sign(digest).await.map_err(|e| counted(&node, e))?;
    let sig = out.signature;
    Ok(Json(json!({
        "r": format!("0x{}", hex::encode(sig.r)),
        "s": format!("0x{}", hex::encode(sig.s)),
        "v": u32::from(sig.v) + 27,
        "recovery_id": sig.v,
        "signature": format!("0x{}", hex::encode(sig.to_bytes())),
        "signers": out.signers, // hex strings (NodeId's human-readable serde form)
        "skipped": out.skipped,
        "address": out.address,
        "digest": format!("0x{}", hex::encode(digest)),
        "generation": out.generation,
    }))
    .into_response())
}

async fn delete_key(State(node): State<Node>, RawQuery(query): RawQuery) -> ApiResult {
    delete_with(&node, &node.default_key(), query).await
}

async fn delete_key_named(
    State(node): State<Node>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let key = key_named(&node, &id)?;
    delete_with(&node, &key, query).await
}

async fn delete_with(node: &Node, key: &KeyNode, query: Option<String>) -> ApiResult {
    let node = node.clone();
    let force = match query.as_deref() {
        None | Some("") => false,
        Some("force=true") => true,
        Some("force=false") => false,
        Some(other) => {
            return Err(bad(
                &node,
                format!("unknown query {other:?}; use force=true"),
            ))
        }
    };
    key.delete_key(force).await.map_err(|e| counted(&node, e))?;
    Ok(Json(json!({ "deleted": true })).into_response())
}

async fn metrics(State(node): State<Node>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        node.metrics().render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

/// The API's routes behind the access control of `policy` ([`auth::guard`]).
pub fn router(node: Node, policy: auth::Policy) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/key", get(key).delete(delete_key))
        .route("/sign", post(sign))
        .route("/keys", get(keys))
        .route("/keys/:id", get(key_status).delete(delete_key_named))
        .route("/keys/:id/sign", post(sign_key))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(node)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(policy),
            auth::guard,
        ))
}

/// Serves the API on `addr` (must be loopback) to callers allowed by `access` until the
/// runtime stops. Returns the bound address (useful with port 0) and the server task.
pub async fn serve(
    node: Node,
    addr: SocketAddr,
    access: auth::Access,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    serve_with_shutdown(node, addr, access, CancellationToken::new()).await
}

/// Like [`serve`], until `shutdown` is cancelled: then the server stops accepting
/// connections, lets the requests in flight finish, and its task ends.
pub async fn serve_with_shutdown(
    node: Node,
    addr: SocketAddr,
    access: auth::Access,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    if !addr.ip().is_loopback() {
        return Err(Error::ConfigInvalid {
            field: "node.rpc_listen".into(),
            reason: "the HTTP API must listen on a loopback address".into(),
        });
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(node, auth::Policy::new(access, bound.port()));
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        match served {
            Ok(()) => tracing::debug!("HTTP API stopped"),
            Err(e) => tracing::error!(error = %e, "HTTP API failed"),
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parsing_gives_clear_errors() {
        let ok = format!("0x{}", "ab".repeat(32));
        assert_eq!(parse_digest(&ok).unwrap(), [0xab; 32]);
        assert_eq!(parse_digest(&"cd".repeat(32)).unwrap(), [0xcd; 32]);
        let e = parse_digest("0xzz").unwrap_err().to_string();
        assert!(e.contains("not hex"), "{e}");
        let e = parse_digest("0xabcd").unwrap_err().to_string();
        assert!(e.contains("got 2 bytes"), "{e}");
    }
}
