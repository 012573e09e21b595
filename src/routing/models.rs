//! Model discovery: each service's `GET {base_url}/models`, fetched at start-up
//! and refreshed in the background, never on the request path.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Deserialize;

use super::service::Service;
use crate::metrics::Label;
use crate::upstream::UpstreamClient;

/// One model as the service described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub created: i64,
    pub owned_by: String,
}

/// A service's model list, in the order it gave them, with a set for lookups.
#[derive(Debug, Default)]
pub struct Catalog {
    pub models: Vec<ModelInfo>,
    /// Shared with metric labels, so labelling a request copies no string.
    ids: HashSet<Label>,
}

impl Catalog {
    pub fn new(models: Vec<ModelInfo>) -> Self {
        let ids = models.iter().map(|m| Label::from(m.id.as_str())).collect();
        Self { models, ids }
    }

    pub fn from_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        Self::new(
            ids.into_iter()
                .map(|id| ModelInfo {
                    id: id.to_owned(),
                    created: 0,
                    owned_by: String::new(),
                })
                .collect(),
        )
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// The shared label for `id`, if listed.
    pub fn label(&self, id: &str) -> Option<Label> {
        self.ids.get(id).cloned()
    }
}

#[derive(Deserialize)]
struct ListWire {
    data: Vec<ModelWire>,
}

#[derive(Deserialize)]
struct ModelWire {
    id: String,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    owned_by: Option<String>,
}

/// Parses an OpenAI `/models` list.
pub fn parse_list(body: &[u8], service: &str) -> Result<Catalog, String> {
    let list: ListWire =
        serde_json::from_slice(body).map_err(|e| format!("not an OpenAI model list: {e}"))?;
    Ok(Catalog::new(
        list.data
            .into_iter()
            .map(|m| ModelInfo {
                id: m.id,
                created: m.created.unwrap_or(0),
                owned_by: m.owned_by.unwrap_or_else(|| service.to_owned()),
            })
            .collect(),
    ))
}

/// Refreshes every service's list concurrently, each bounded by `timeout`.
/// A failed discovery makes the list unknown again (SPEC 4.2: such a service is
/// assumed to serve every model; if it does not, its 404 fails over).
pub async fn refresh_all(client: &UpstreamClient, services: &[Arc<Service>], timeout: Duration) {
    join_all(services.iter().map(|s| refresh_one(client, s, timeout))).await;
}

async fn refresh_one(client: &UpstreamClient, service: &Service, timeout: Duration) {
    let result = client
        .get_models(service.models_url(), service.headers(), timeout)
        .await
        .and_then(|body| parse_list(&body, service.name()));
    match result {
        Ok(catalog) => {
            tracing::debug!(
                service = service.name(),
                models = catalog.models.len(),
                "model list discovered"
            );
            service.models.store(Some(Arc::new(catalog)));
        }
        Err(why) => {
            tracing::warn!(
                service = service.name(),
                reason = %why,
                "model discovery failed; assuming the service serves every model until it answers"
            );
            service.models.store(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_and_ollama_lists() {
        let c = parse_list(
            br#"{"object":"list","data":[{"id":"a","created":5,"owned_by":"me"},{"id":"org/b"}]}"#,
            "svc",
        )
        .unwrap();
        assert!(c.contains("a") && c.contains("org/b") && !c.contains("c"));
        assert_eq!(c.models[1].owned_by, "svc");
        assert_eq!(c.models[0].created, 5);
        assert!(parse_list(b"<html>", "svc").is_err());
    }
}
