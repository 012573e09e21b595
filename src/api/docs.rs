//! `/openapi.json` (generated from the handlers' annotations), and the Swagger
//! UI and ReDoc pages, whose assets are compiled into the binary (`assets/`),
//! so the docs work with no network.

use std::sync::LazyLock;

use axum::response::{Html, IntoResponse, Response};
use http::{HeaderValue, header};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, auth, openai, schema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "llm-router",
        description = "An OpenAI-compatible gateway: each request goes to one of several upstream \
services, by priority, model support, health and rate limits, with automatic failover. Request \
and response bodies pass through unchanged.",
        license(name = "MIT")
    ),
    paths(
        openai::chat_completions,
        openai::completions,
        openai::embeddings,
        openai::list_models,
        openai::get_model,
        admin::root,
        admin::health,
        admin::ready,
        admin::metrics,
        admin::backend_info,
        admin::router_stats,
        admin::router_health,
        admin::rate_limits,
        admin::reset_stats,
        auth::status,
        auth::metrics,
        auth::reload_keys,
        auth::reset_metrics,
        openapi_json,
        swagger_ui,
        swagger_ui_css,
        swagger_ui_js,
        redoc,
        redoc_js,
    ),
    components(schemas(schema::ErrorResponse)),
    modifiers(&BearerAuth),
    tags(
        (name = "openai", description = "OpenAI-compatible endpoints, routed with failover"),
        (name = "router", description = "Router information, statistics and health"),
        (name = "auth", description = "Client keys: status, per-key metrics, reload"),
        (name = "docs", description = "This document and its viewers"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A client key (AUTH_KEY...); the header name is AUTH_HEADER_NAME",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, rendered once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi().to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot render the OpenAPI document");
        "{}".to_owned()
    })
});

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

const SWAGGER_PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llm-router API</title>
<link rel="stylesheet" href="docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: "openapi.json", dom_id: "#swagger-ui" });</script>
</body></html>
"##;

const REDOC_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llm-router API</title></head>
<body><redoc spec-url="openapi.json"></redoc>
<script src="redoc/redoc.standalone.js"></script>
</body></html>
"#;

/// `GET /docs`: Swagger UI.
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "Swagger UI", content_type = "text/html", body = String)))]
pub async fn swagger_ui() -> Html<&'static str> {
    Html(SWAGGER_PAGE)
}

/// `GET /redoc`: ReDoc.
#[utoipa::path(get, path = "/redoc", tag = "docs",
    responses((status = 200, description = "ReDoc", content_type = "text/html", body = String)))]
pub async fn redoc() -> Html<&'static str> {
    Html(REDOC_PAGE)
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut r = bytes.into_response();
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    r
}

/// Swagger UI's stylesheet (swagger-ui-dist, compiled in).
#[utoipa::path(get, path = "/docs/swagger-ui.css", tag = "docs",
    responses((status = 200, description = "Stylesheet", content_type = "text/css", body = String)))]
pub async fn swagger_ui_css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    )
}

/// Swagger UI's script (swagger-ui-dist, compiled in).
#[utoipa::path(get, path = "/docs/swagger-ui-bundle.js", tag = "docs",
    responses((status = 200, description = "Script", content_type = "text/javascript", body = String)))]
pub async fn swagger_ui_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    )
}

/// ReDoc's script (redoc, compiled in).
#[utoipa::path(get, path = "/redoc/redoc.standalone.js", tag = "docs",
    responses((status = 200, description = "Script", content_type = "text/javascript", body = String)))]
pub async fn redoc_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/redoc/redoc.standalone.js"),
    )
}
