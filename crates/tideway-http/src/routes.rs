//! Which handler answers which method and path.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tideway_core::Store;

use crate::{
    Scope, admin,
    app::{App, Peer},
    batch, cors,
    direct::RawHead,
    error::{ApiError, ErrorCode},
    metrics,
    publish::{self, PublishBody},
    response::{JsonAnswer, Response, json},
    stream, tokens, ui, ws,
};

impl<S: Store> App<S> {
    /// Answers one request. Every error becomes the contract's JSON error here.
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Peer,
    ) -> Result<Response, std::convert::Infallible> {
        let response = match self.route(request, &peer).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
        Ok(response)
    }

    async fn route(&self, request: Request<Incoming>, peer: &Peer) -> Result<Response, ApiError> {
        let cors = &self.config.cors;
        let origins = match request.uri().path() {
            "/v1/stream" | "/v1/ws" => Some((&cors.subscribe, "GET, OPTIONS")),
            "/v1/publish" | "/v1/publish/batch" | "/v1/tokens" | "/v1/tokens/revoke" => {
                Some((&cors.publish, "POST, OPTIONS"))
            }
            path if path.starts_with("/v1/admin/") => Some((&cors.admin, "GET, OPTIONS")),
            _ => None,
        };
        if let Some((origins, methods)) = origins {
            if request.method() == Method::OPTIONS {
                return Ok(cors::preflight(origins, request.headers(), methods));
            }
            // Only the Origin is needed once the request is handed on; no header map copy.
            let origin = cors::origin(request.headers());
            let mut response = match self.route_inner(request, peer).await {
                Ok(response) => response,
                Err(err) => err.into_response(),
            };
            cors::allow(origins, origin.as_ref(), &mut response);
            return Ok(response);
        }
        self.route_inner(request, peer).await
    }

    async fn route_inner(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Result<Response, ApiError> {
        self.check_head_size(&request)?;
        let path = request.uri().path();
        let method = request.method();
        match path {
            "/v1/stream" => match *method {
                Method::GET => stream::subscribe(self, &request, peer).await,
                _ => Err(ApiError::method_not_allowed("GET, OPTIONS")),
            },
            "/v1/ws" => match *method {
                Method::GET => ws::subscribe(self, request, peer).await,
                _ => Err(ApiError::method_not_allowed("GET, OPTIONS")),
            },
            "/v1/tokens" => match *method {
                Method::POST => tokens::sign(self, request).await,
                _ => Err(ApiError::method_not_allowed("POST")),
            },
            "/v1/tokens/revoke" => match *method {
                Method::POST => tokens::revoke(self, request).await,
                _ => Err(ApiError::method_not_allowed("POST")),
            },
            "/v1/publish" => match *method {
                Method::POST => publish::publish(self, request).await,
                _ => Err(ApiError::method_not_allowed("POST")),
            },
            "/v1/publish/batch" => match *method {
                Method::POST => batch::publish_batch(self, request).await,
                _ => Err(ApiError::method_not_allowed("POST")),
            },
            "/healthz" => get_only(method)
                .map(|()| json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
            "/readyz" => {
                get_only(method)?;
                if self.gateway.ready().await {
                    Ok(json(
                        StatusCode::OK,
                        &serde_json::json!({"status": "ready"}),
                    ))
                } else if self.gateway.is_draining() {
                    Err(ApiError::new(ErrorCode::Draining, "this node is draining"))
                } else {
                    Err(ApiError::new(
                        ErrorCode::StoreUnavailable,
                        "the state store is unreachable",
                    ))
                }
            }
            "/metrics" => get_only(method).map(|()| metrics::render(self)),
            _ if path == "/admin" || path.starts_with("/admin/") => {
                get_only(method)?;
                ui::serve(&path["/admin".len()..])
            }
            _ if path.starts_with("/v1/admin/") => {
                get_only(method)?;
                let key = self.authorize(request.headers(), Scope::Admin)?;
                admin::route(self, &request, &key).await
            }
            _ => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no route {path}"),
            )),
        }
    }

    /// Answers a `POST /v1/publish` read outside hyper (see `direct`) as `route` would:
    /// CORS, the head-size check, then the publish. An accepted or dropped publish's
    /// answer comes back as it is, with its CORS headers, for `direct` to write; a
    /// refusal as the response `route` gives.
    pub(crate) async fn publish_direct(
        &self,
        head: &RawHead<'_, '_>,
        body: &[u8],
    ) -> Result<(JsonAnswer, cors::Allowed), Response> {
        self.direct.publish.fetch_add(1, Relaxed);
        let origin = cors::origin(head);
        let answer = match self.check_head(head, head.target_len()) {
            Ok(()) => {
                publish::publish_from(self, head, PublishBody::<Full<Bytes>>::InHand(body)).await
            }
            Err(err) => Err(err),
        };
        match answer {
            Ok(answer) => Ok((
                answer,
                cors::allowed(&self.config.cors.publish, origin.as_ref()),
            )),
            Err(err) => {
                let mut response = err.into_response();
                cors::allow(&self.config.cors.publish, origin.as_ref(), &mut response);
                Err(response)
            }
        }
    }

    /// Answers a `GET /v1/stream` read outside hyper (see `direct`) as `route` would:
    /// CORS, the head-size check, then the subscription.
    pub(crate) async fn subscribe_direct(&self, request: Request<()>, peer: &Peer) -> Response {
        self.direct.stream.fetch_add(1, Relaxed);
        let origin = cors::origin(request.headers());
        let answer = match self.check_head_size(&request) {
            Ok(()) => stream::subscribe(self, &request, peer).await,
            Err(err) => Err(err),
        };
        let mut response = answer.unwrap_or_else(ApiError::into_response);
        cors::allow(&self.config.cors.subscribe, origin.as_ref(), &mut response);
        response
    }
}

fn get_only(method: &Method) -> Result<(), ApiError> {
    match *method {
        Method::GET | Method::HEAD => Ok(()),
        _ => Err(ApiError::method_not_allowed("GET")),
    }
}
