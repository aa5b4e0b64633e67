//! `GET /_admin/tail[?namespace=N][&object=O]`: the live tail as newline-delimited JSON, one
//! [`TailLine`](crate::tail::TailLine) per line, until the client goes away. A client that reads
//! too slowly gets `{"type":"lagged","missed":N}` where lines were dropped for it.

use super::admin::authorize;
use super::error::ApiError;
use super::state::AppState;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

#[derive(Deserialize)]
pub(super) struct Filter {
    namespace: Option<String>,
    object: Option<String>,
}

pub(super) async fn tail(
    State(app): State<AppState>,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let Some(watcher) = app.objects.runtime().tail().watch() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "{} tails are open already, the most at once",
                crate::tail::MAX_WATCHERS
            ),
        ));
    };
    let lines = futures::stream::unfold((watcher, filter), |(mut watcher, filter)| async move {
        loop {
            let line = match watcher.lines.recv().await {
                Ok(line) => {
                    let wanted = filter
                        .namespace
                        .as_ref()
                        .is_none_or(|n| *n == line.namespace)
                        && filter.object.as_ref().is_none_or(|o| *o == line.object);
                    if !wanted {
                        continue;
                    }
                    line.json.to_string()
                }
                Err(RecvError::Lagged(missed)) => {
                    serde_json::json!({ "type": "lagged", "missed": missed }).to_string()
                }
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, std::io::Error>(line + "\n"), (watcher, filter)));
        }
    });
    let mut response = Body::from_stream(lines.boxed()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}
