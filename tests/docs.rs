//! SPEC 5: `/openapi.json` covers every route, and `/docs` and `/redoc` work
//! with no network (their assets are served by the router itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::*;

#[tokio::test]
async fn the_document_is_openapi_3_1_and_covers_every_route_served() {
    let a = MockUpstream::start("A").await;
    let router = TestRouter::start_with(
        vec![svc(&a)],
        &[
            ("ENABLE_AUTH", "true"),
            ("AUTH_KEY", "sk-docs-test-key-00000000"),
        ],
    )
    .await;
    let r = router.get("/openapi.json").await;
    assert_eq!(r.status(), 200, "needs no key");
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: std::collections::BTreeSet<String> =
        doc["paths"].as_object().unwrap().keys().cloned().collect();
    let served: std::collections::BTreeSet<String> = llm_router::access::ROUTES
        .iter()
        .map(|r| r.replace("{*model_id}", "{model_id}"))
        .collect();
    assert_eq!(
        paths, served,
        "documented paths differ from the route table"
    );
    // every documented operation is really routed (never the unknown-route 404)
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{model_id}", "test-model");
        for method in ops.as_object().unwrap().keys() {
            let r = router
                .request(method.parse().unwrap(), &concrete)
                .bearer_auth("sk-docs-test-key-00000000")
                .send()
                .await
                .unwrap();
            let body = r.text().await.unwrap();
            assert!(
                !body.contains("Invalid URL"),
                "{method} {path} is documented but not served: {body}"
            );
        }
    }
    // routed operations list their errors and the security scheme
    let chat = &doc["paths"]["/v1/chat/completions"]["post"];
    for status in [
        "200", "400", "401", "404", "413", "429", "502", "503", "504",
    ] {
        assert!(
            chat["responses"].get(status).is_some(),
            "chat lacks {status}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["ErrorResponse"].is_object());
}

#[tokio::test]
async fn swagger_ui_and_redoc_load_only_local_assets() {
    let router = TestRouter::start_with(
        vec![svc(&MockUpstream::start("A").await)],
        &[
            ("ENABLE_AUTH", "true"),
            ("AUTH_KEY", "sk-docs-test-key-00000000"),
        ],
    )
    .await;
    for (page, assets) in [
        (
            "/docs",
            vec![
                ("/docs/swagger-ui-bundle.js", "text/javascript"),
                ("/docs/swagger-ui.css", "text/css"),
            ],
        ),
        (
            "/redoc",
            vec![("/redoc/redoc.standalone.js", "text/javascript")],
        ),
    ] {
        let r = router.get(page).await;
        assert_eq!(r.status(), 200, "{page} needs no key");
        let html = r.text().await.unwrap();
        assert!(
            !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
            "{page} loads from the network:\n{html}"
        );
        assert!(html.contains("openapi.json"));
        for (asset, kind) in assets {
            let name = asset.rsplit('/').next().unwrap();
            assert!(html.contains(name), "{page} does not reference {name}");
            let r = router.get(asset).await;
            assert_eq!(r.status(), 200, "{asset}");
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with(kind)
            );
            assert!(
                r.bytes().await.unwrap().len() > 100_000,
                "{asset} looks truncated"
            );
        }
    }
}
