//! `GET /_admin/backup`: a consistent snapshot of everything the host keeps, as a database file
//! streamed to the admin (see [`crate::storage::write_backup`]). One at a time: each takes a
//! file the size of the database in the data dir until it is sent.

use super::admin::authorize;
use super::error::ApiError;
use super::state::AppState;
use crate::storage::write_backup;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncReadExt;

/// Numbers the snapshots' files, so that no two share a name.
static NEXT: AtomicU64 = AtomicU64::new(0);

pub(super) async fn backup(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    if !app.storage.is_local() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cluster_backup",
            "this host is a node of a cluster: objects' state, alarms and the deployments' log \
             are in its PostgreSQL database; back that up (pg_dump, or the database's own \
             backups) instead",
        ));
    }
    let Ok(running) = app.backups.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_in_progress",
            "another backup is being taken; try again when it is done",
        ));
    };
    let path = app.data_dir.join(format!(
        "backup-{}-{}.redb.partial",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let db = app.storage.local.clone();
    let at = path.clone();
    let written = tokio::task::spawn_blocking(move || write_backup(&db, &at)).await;
    let failed = |message: String| {
        let _ = std::fs::remove_file(&path);
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "backup_failed", message)
    };
    let size = match written {
        Ok(Ok(size)) => size,
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(e) => return Err(failed(format!("the backup panicked: {e}"))),
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| failed(format!("reading the snapshot: {e}")))?;
    let length = file.metadata().await.map(|m| m.len()).ok();
    // Unlinked while open: the file goes when the response is done, or the client goes away.
    let _ = std::fs::remove_file(&path);
    let chunks = futures::stream::unfold((file, running), |(mut file, running)| async move {
        let mut chunk = vec![0u8; 256 << 10];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok::<_, std::io::Error>(chunk), (file, running)))
            }
            Err(e) => Some((Err(e), (file, running))),
        }
    });
    let mut response = Body::from_stream(chunks.boxed()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, length.into());
    }
    headers.insert("x-dohost-backup-entries", size.entries.into());
    Ok(response)
}
