//! Which handler answers which method and path.

use std::{net::SocketAddr, sync::Arc};

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tideway_core::{Gateway, Store};
use tideway_protocol::TopicList;

use crate::{
    HttpConfig, admin,
    error::ApiError,
    metrics, publish,
    response::{Response, json},
    stream,
};

/// What every handler needs. Shared by all connections of a server.
pub(crate) struct App<S> {
    pub(crate) gateway: Gateway<S>,
    pub(crate) config: HttpConfig,
}

impl<S: Store> App<S> {
    /// Answers one request. Every error becomes the contract's JSON error here.
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response, std::convert::Infallible> {
        let response = match self.route(request, peer).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
        Ok(response)
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response, ApiError> {
        let path = request.uri().path();
        let method = request.method();
        match path {
            "/v1/stream" => match *method {
                Method::GET => stream::subscribe(self, &request, peer).await,
                Method::OPTIONS => Ok(stream::preflight(self, &request)),
                _ => Err(ApiError::method_not_allowed("GET, OPTIONS")),
            },
            "/v1/publish" => match *method {
                Method::POST => publish::publish(self, request).await,
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
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "draining",
                        "this node is draining",
                    ))
                } else {
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the state store is unreachable",
                    ))
                }
            }
            "/metrics" => get_only(method).map(|()| metrics::render(&self.gateway)),
            _ if path.starts_with("/v1/admin/") => {
                get_only(method)?;
                self.config.api_keys.check(request.headers())?;
                admin::route(self, &request).await
            }
            _ => Err(ApiError::not_found("not_found", format!("no route {path}"))),
        }
    }

    /// The topic list of a request: every `x-sse-topic` header and every `topic` query
    /// value, parsed as one list.
    pub(crate) fn topics(
        &self,
        request: &Request<Incoming>,
        query_too: bool,
    ) -> Result<TopicList, ApiError> {
        let query = request.uri().query().unwrap_or("");
        let from_query = if query_too {
            tideway_protocol::query_values(query, "topic")
        } else {
            Vec::new()
        };
        let headers = request.headers().get_all("x-sse-topic");
        let values = headers
            .iter()
            .map(|v| v.as_bytes())
            .chain(from_query.iter().map(|v| v.as_bytes()));
        TopicList::parse_all(values, self.config.max_topics)
            .map_err(|err| ApiError::bad_request("invalid_topic", err.to_string()))
    }
}

fn get_only(method: &Method) -> Result<(), ApiError> {
    match *method {
        Method::GET | Method::HEAD => Ok(()),
        _ => Err(ApiError::method_not_allowed("GET")),
    }
}
