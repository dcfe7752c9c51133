//! Access control of the HTTP API: one middleware ([`guard`]) in front of every route.
//!
//! The API listens on loopback only, but that alone does not keep out the other programs
//! of the machine, nor a web page in the operator's browser: a page can POST to
//! `http://127.0.0.1:8645/sign` (a "simple" cross-origin request needs no CORS
//! permission to be *sent*), and with DNS rebinding (`evil.example` first resolving to
//! the attacker's server, then to 127.0.0.1) it can even read the answers. So every
//! request passes these checks, in this order:
//!
//! 1. **Host allow-list** (403): the `Host` header (and the authority of an absolute
//!    request URI) must be one of the allowed hosts, by default `127.0.0.1:<port>`,
//!    `localhost:<port>` and `[::1]:<port>` of the bound port (config
//!    `rpc.allowed_hosts`). A DNS-rebound page sends `Host: evil.example:<port>`.
//! 2. **Origin** (403): a request with an `Origin` header (browsers send one on every
//!    cross-origin request and on POSTs) is refused unless it is `http://<allowed host>`.
//!    No CORS headers are ever sent, so a browser never lets a page read an answer.
//! 3. **Operator token** (401, with `WWW-Authenticate: Bearer`): `Authorization: Bearer
//!    <token>`, compared in constant time. The token is in a file (default
//!    `<data_dir>/rpc-token`, config `rpc.token_file`) that the node creates with mode
//!    0600 (in a 0700 directory) when it is missing, and refuses to start with if group
//!    or others have any access to it. `GET /metrics` needs no token while
//!    `rpc.metrics_public = true` (the default): Prometheus scrapers rarely carry
//!    secrets, and the metrics hold none (counters, gauges, latencies).
//! 4. **JSON only** (415): a request with a body, or with any `Content-Type`, must say
//!    `Content-Type: application/json` (parameters such as `; charset=utf-8` are
//!    allowed). HTML forms can only send `application/x-www-form-urlencoded`,
//!    `multipart/form-data` or `text/plain`.
//! 5. **Size** (413): bodies over [`MAX_BODY_BYTES`] are refused, by their
//!    `Content-Length` before anything is read, or while reading a chunked body.
//!
//! Every refusal is `{"error": "..."}` saying what was wrong and how to do it right.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Largest request body accepted (64 KiB; the largest legitimate body is well under 1 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shortest token accepted from an operator-written token file.
const MIN_TOKEN_LEN: usize = 32;

const TOKEN_FIELD: &str = "rpc.token_file";

fn token_err(reason: impl Into<String>) -> Error {
    Error::ConfigInvalid {
        field: TOKEN_FIELD.into(),
        reason: reason.into(),
    }
}

/// The operator token of the HTTP API (kept out of Debug output).
#[derive(Clone)]
pub struct ApiToken {
    secret: Arc<Zeroizing<String>>,
    path: Option<PathBuf>,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("secret", &"[REDACTED]")
            .field("path", &self.path)
            .finish()
    }
}

impl ApiToken {
    /// Reads the token in `path`, or, if there is no such file, creates it with a fresh
    /// random token (32 bytes, hex) and mode 0600, creating missing parent directories
    /// with mode 0700. Refuses (typed error saying how to fix it) a file that group or
    /// others may access, and a token shorter than 32 characters or with characters that
    /// cannot appear in an HTTP header.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(token_err(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn create(path: &Path) -> Result<Self> {
        use std::io::Write;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut dirs = std::fs::DirBuilder::new();
            dirs.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                dirs.mode(0o700);
            }
            dirs.create(parent).map_err(|e| {
                token_err(format!(
                    "cannot create the directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
        let secret = Zeroizing::new(hex::encode(bytes.as_ref()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|e| token_err(format!("cannot create {}: {e}", path.display())))?;
        file.write_all(secret.as_bytes())
            .and_then(|_| file.write_all(b"\n"))
            .and_then(|_| file.sync_all())
            .map_err(|e| token_err(format!("cannot write {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "created the HTTP API token file (mode 0600)");
        Ok(Self {
            secret: Arc::new(secret),
            path: Some(path.to_path_buf()),
        })
    }

    fn load(path: &Path) -> Result<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path)
                .map_err(|e| token_err(format!("cannot read {}: {e}", path.display())))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(token_err(format!(
                    "{} has mode {mode:04o}: group or others may read it, so any local user \
                     could call the API as the operator; fix: chmod 600 {} (and consider a \
                     new token: delete the file and restart, a new one is created)",
                    path.display(),
                    path.display()
                )));
            }
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| token_err(format!("cannot read {}: {e}", path.display())))?,
        );
        let token = Self::from_secret(text.trim()).map_err(|e| match e {
            Error::ConfigInvalid { reason, .. } => {
                token_err(format!("{}: {reason}", path.display()))
            }
            other => other,
        })?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            ..token
        })
    }

    /// A token given directly (at least 32 visible ASCII characters, no spaces).
    pub fn from_secret(secret: &str) -> Result<Self> {
        if secret.len() < MIN_TOKEN_LEN {
            return Err(token_err(format!(
                "the token must be at least {MIN_TOKEN_LEN} characters (delete the file \
                 and restart to get a random one)"
            )));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(token_err(
                "the token must be visible ASCII characters without spaces",
            ));
        }
        Ok(Self {
            secret: Arc::new(Zeroizing::new(secret.to_owned())),
            path: None,
        })
    }

    /// The token, for a client's `Authorization: Bearer` header.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The file it was read from or written to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Constant-time comparison with a presented token (the length is not secret).
    fn matches(&self, presented: &[u8]) -> bool {
        self.secret.as_bytes().ct_eq(presented).into()
    }
}

/// Who may call the API: what [`crate::rpc::serve_with_shutdown`] needs besides an
/// address.
#[derive(Clone, Debug)]
pub struct Access {
    /// The operator token.
    pub token: ApiToken,
    /// Allowed `Host` header values (`host:port`, compared case-insensitively). `None`:
    /// `127.0.0.1:<port>`, `localhost:<port>` and `[::1]:<port>` of the bound port.
    pub allowed_hosts: Option<Vec<String>>,
    /// Whether `GET /metrics` is served without the token (it holds no secrets).
    pub metrics_public: bool,
}

impl Access {
    /// `token`, the default hosts, public metrics.
    pub fn new(token: ApiToken) -> Self {
        Self {
            token,
            allowed_hosts: None,
            metrics_public: true,
        }
    }
}

/// The loopback names of `port`: the default host allow-list.
pub fn default_allowed_hosts(port: u16) -> Vec<String> {
    vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// [`Access`] resolved for a bound port: what the middleware checks.
#[derive(Debug)]
pub struct Policy {
    token: ApiToken,
    hosts: Vec<String>,
    origins: Vec<String>,
    metrics_public: bool,
}

impl Policy {
    /// Resolves `access` for the bound `port`.
    pub fn new(access: Access, port: u16) -> Self {
        let hosts: Vec<String> = access
            .allowed_hosts
            .unwrap_or_else(|| default_allowed_hosts(port))
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let origins = hosts.iter().map(|h| format!("http://{h}")).collect();
        Self {
            token: access.token,
            hosts,
            origins,
            metrics_public: access.metrics_public,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn token_hint(&self) -> String {
        match self.token.path() {
            Some(p) => format!("the token is in {}", p.display()),
            None => "ask the operator for the token".into(),
        }
    }
}

fn refuse(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut response = (status, Json(json!({ "error": msg.into() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// The access-control middleware (see the module docs); install with
/// `axum::middleware::from_fn_with_state(Arc<Policy>, guard)`.
pub async fn guard(State(policy): State<Arc<Policy>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;

    // 1. Host (DNS rebinding).
    let host = match header_str(headers, header::HOST) {
        Some(h) => h,
        None => {
            return refuse(
                StatusCode::FORBIDDEN,
                "missing Host header; allowed hosts: ".to_owned() + &policy.hosts.join(", "),
            )
        }
    };
    let uri_authority = parts.uri.authority().map(|a| a.as_str());
    if let Some(bad) = std::iter::once(host)
        .chain(uri_authority)
        .find(|h| !policy.host_allowed(h))
    {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "host {bad:?} is not allowed (a DNS-rebinding defence); allowed: {} \
                 (config rpc.allowed_hosts)",
                policy.hosts.join(", ")
            ),
        );
    }

    // 2. Origin (web pages).
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        if !policy
            .origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
        {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request from {origin:?} refused: the API is not for web \
                     pages (send no Origin header)"
                ),
            );
        }
    }

    // 3. Token.
    let public =
        policy.metrics_public && parts.method == Method::GET && parts.uri.path() == "/metrics";
    if !public {
        let presented = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .and_then(|v| {
                let (scheme, rest) = v.split_at(v.len().min(7));
                scheme
                    .eq_ignore_ascii_case(b"bearer ")
                    .then(|| rest.trim_ascii())
            });
        match presented {
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "missing operator token: send the header `Authorization: Bearer \
                         <token>` ({})",
                        policy.token_hint()
                    ),
                )
            }
            Some(t) if !policy.token.matches(t) => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    format!("wrong operator token ({})", policy.token_hint()),
                )
            }
            Some(_) => {}
        }
    }

    // 4. JSON only.
    let declared_len = match header_str(headers, header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return refuse(StatusCode::BAD_REQUEST, "malformed Content-Length"),
        },
    };
    let may_have_body =
        declared_len.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    let content_type = header_str(headers, header::CONTENT_TYPE);
    if may_have_body || content_type.is_some() {
        let is_json = content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the API takes JSON only: send `Content-Type: application/json` (got {})",
                    content_type.map_or("none".to_owned(), |ct| format!("{ct:?}"))
                ),
            );
        }
    }

    // 5. Size.
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the limit of {MAX_BODY_BYTES} bytes"),
        )
    };
    if declared_len.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let mut stream = body.into_data_stream();
    let mut buffered = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) if buffered.len() + bytes.len() > MAX_BODY_BYTES => return too_large(),
            Ok(bytes) => buffered.extend_from_slice(&bytes),
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(buffered)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_and_debug() {
        let t = ApiToken::from_secret(&"ab".repeat(32)).unwrap();
        assert!(t.matches("ab".repeat(32).as_bytes()));
        assert!(!t.matches("ab".repeat(31).as_bytes()));
        assert!(!t.matches(format!("{}ac", "ab".repeat(31)).as_bytes()));
        assert!(!format!("{t:?}").contains("abab"));
        assert!(ApiToken::from_secret("short").is_err());
        assert!(ApiToken::from_secret(&" x".repeat(20)).is_err());
    }
}
