//! axum 0.8 integration (`axum` feature): [`WebSocketUpgrade`], an
//! extractor in the shape of axum's own, over [`crate::upgrade`]'s path.
//!
//! Owns the three steps axum users know: the extractor checks the request
//! (RFC 6455 §4.2: a bad one is rejected with the status wsline's server
//! answers with), the handler may adjust the [`ServerConfig`] (Origin,
//! subprotocols, limits, timers), and [`WebSocketUpgrade::on_upgrade`]
//! answers (101, or the refusal from the config's checks) and spawns the
//! callback with the open [`HyperWebSocket`]. The rules and the WebSocket
//! construction are those of every wsline server path (`driver`,
//! `server::Opening`); this module only carries them through axum's
//! traits. HTTP/1.1 upgrades and (feature `http2`) RFC 8441 extended
//! CONNECTs go through it alike (`upgrade::Transport`).

use std::future::Future;

use ::axum::body::Body;
use ::axum::extract::FromRequestParts;
use ::axum::response::{IntoResponse, Response};
use http::request::Parts;
use hyper::upgrade::OnUpgrade;
use wsline_proto::handshake::Request;

use crate::upgrade::{answer, from_http, validate, HyperWebSocket, Transport, UpgradeRefused};
use crate::{Acceptance, ServerConfig};

/// Extractor for a WebSocket upgrade in an axum handler: take it as an
/// argument, then answer with [`on_upgrade`](WebSocketUpgrade::on_upgrade).
///
/// The configuration is the [`ServerConfig`] in the request's extensions
/// (`.layer(axum::Extension(config))` on the router) or else
/// `ServerConfig::default()`; a handler can replace it
/// ([`config`](WebSocketUpgrade::config)) or change it
/// ([`config_mut`](WebSocketUpgrade::config_mut)). A request that fails
/// the RFC 6455 checks is rejected by the extractor with the response
/// wsline's own server gives (400, 405, 426, with the reason as text);
/// the Origin allow-list and the rest of the config apply in
/// `on_upgrade` (403 for an Origin not allowed).
///
/// With wsline's `http2` feature the extractor also takes WebSockets over
/// HTTP/2 (RFC 8441 extended CONNECT, answered with 200): route the path
/// with `any(...)` (or `on(MethodFilter::GET.or(MethodFilter::CONNECT),
/// ...)`) rather than `get(...)`, since those requests are CONNECTs, and
/// serve HTTP/2 with SETTINGS_ENABLE_CONNECT_PROTOCOL (`axum::serve`
/// does with axum's `http2` feature; with hyper_util's auto builder, call
/// `http2().enable_connect_protocol()` as `examples/hyper_echo.rs` does).
///
/// ```no_run
/// use axum::{response::Response, routing::get, Extension, Router};
/// use wsline::axum::WebSocketUpgrade;
/// use wsline::ServerConfig;
///
/// async fn echo(ws: WebSocketUpgrade) -> Response {
///     ws.on_upgrade(|mut ws| async move {
///         while let Some(Ok(message)) = ws.recv().await {
///             if ws.send(message).await.is_err() {
///                 break;
///             }
///         }
///     })
/// }
///
/// # async fn serve() -> std::io::Result<()> {
/// let mut config = ServerConfig::default();
/// config.allowed_origins = vec!["https://example.com".into()];
/// let app = Router::new()
///     .route("/ws", get(echo))
///     .layer(Extension(config));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
#[derive(Debug)]
pub struct WebSocketUpgrade {
    request: Request,
    /// HTTP/1.1 upgrade or RFC 8441 extended CONNECT.
    transport: Transport,
    on_upgrade: OnUpgrade,
    config: ServerConfig,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeRefused;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let (request, transport) = from_http(
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            &parts.extensions,
        )
        .map_err(|e| UpgradeRefused::from_error(e, Transport::of(parts.version)))?;
        validate(&request, &transport)
            .map_err(|e| UpgradeRefused::from_error(e, transport.clone()))?;
        // axum's server (hyper) puts it there; a request that did not come
        // through a hyper connection cannot be upgraded.
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| not_upgradable(transport.is_http2()))?;
        let config = parts
            .extensions
            .get::<ServerConfig>()
            .cloned()
            .unwrap_or_default();
        Ok(Self {
            request,
            transport,
            on_upgrade,
            config,
        })
    }
}

impl WebSocketUpgrade {
    /// The request, as wsline sees it: path, query, headers, the
    /// subprotocols offered.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Uses `config` for this connection instead of the one from the
    /// request's extensions.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration this connection will use, to change in place
    /// (e.g. the subprotocols, or a timer).
    pub fn config_mut(&mut self) -> &mut ServerConfig {
        &mut self.config
    }

    /// Answers the request: 101, then `callback` runs on a task of its
    /// own with the open WebSocket; or the refusal the config's checks
    /// give (403 for an Origin not allowed). If the client leaves before
    /// the connection is handed over, `callback` is not called.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(HyperWebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = |_: &Request| Ok(Acceptance::default());
        let answer = match answer(&self.request, &self.transport, &self.config, accept) {
            Ok(answer) => answer,
            Err(refused) => return IntoResponse::into_response(refused),
        };
        let (response, websocket) = answer.on(self.on_upgrade);
        tokio::spawn(async move {
            match websocket.await {
                Ok(ws) => callback(ws).await,
                Err(error) => tracing::debug!(%error, "WebSocket upgrade not completed"),
            }
        });
        response.map(Body::new)
    }
}

/// The refusal of a request that no hyper connection can upgrade (500: the
/// server's fault, not the client's).
fn not_upgradable(http2: bool) -> UpgradeRefused {
    let response = wsline_proto::handshake::Response::reject(
        500,
        "this request cannot be upgraded: it did not come through a hyper connection served with upgrades",
    );
    UpgradeRefused::from_response(response, http2)
}

impl IntoResponse for UpgradeRefused {
    fn into_response(self) -> Response {
        UpgradeRefused::into_response(self).map(Body::new)
    }
}
