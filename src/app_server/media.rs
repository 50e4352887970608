//! `POST /media` uploads and `GET /media/{id}`. Files are named by a random
//! id, never by anything the client sent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::state::AppState;
use crate::http::advertise::PublicUrls;
use crate::store::Media;
use crate::wire::http::{AUTH_TOKEN_HEADER, DevError, Uploaded};

/// Content types an upload may have.
pub const ALLOWED: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "audio/mpeg",
    "audio/ogg",
    "audio/aac",
    "application/pdf",
    "application/zip",
    "text/plain",
];

/// Where upload bytes live, and how many bytes they may take in all.
pub struct Blobs {
    place: Place,
    /// Bytes stored plus bytes reserved by uploads in flight.
    used: AtomicU64,
    quota: u64,
}

enum Place {
    Memory(Mutex<HashMap<String, Bytes>>),
    Disk(PathBuf),
}

/// A share of the quota held by an upload; given back on drop unless kept.
struct Reservation<'a> {
    blobs: &'a Blobs,
    bytes: u64,
}

impl Reservation<'_> {
    /// Shrinks the share to what the upload turned out to need.
    fn shrink_to(&mut self, bytes: u64) {
        let extra = self.bytes.saturating_sub(bytes);
        self.blobs.used.fetch_sub(extra, Ordering::AcqRel);
        self.bytes -= extra;
    }

    /// The bytes are stored now: they stay counted.
    fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.blobs.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Blobs {
    pub fn memory(quota: u64) -> Self {
        Self {
            place: Place::Memory(Mutex::default()),
            used: AtomicU64::new(0),
            quota,
        }
    }

    /// Uploads under `dir` (created 0700 on the first upload); what is there
    /// already counts towards the quota.
    pub fn disk(dir: PathBuf, quota: u64) -> std::io::Result<Self> {
        let used = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            place: Place::Disk(dir),
            used: AtomicU64::new(used),
            quota,
        })
    }

    /// Takes `bytes` of the quota, or `None` when they do not fit.
    fn reserve(&self, bytes: u64) -> Option<Reservation<'_>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.quota)
            })
            .ok()
            .map(|_| Reservation { blobs: self, bytes })
    }

    async fn put(&self, id: &str, bytes: Bytes) -> std::io::Result<()> {
        match &self.place {
            Place::Memory(map) => {
                map.lock().unwrap().insert(id.to_owned(), bytes);
                Ok(())
            }
            Place::Disk(dir) => {
                use std::os::unix::fs::DirBuilderExt;
                use tokio::io::AsyncWriteExt;
                // Uploads are private to this user's account on the machine.
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true).mode(0o700);
                builder.create(dir)?;
                let mut file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(dir.join(id))
                    .await?;
                file.write_all(&bytes).await?;
                file.flush().await
            }
        }
    }

    /// The bytes of `id` as a body: shared from memory, or streamed from
    /// disk (a client that reads slowly holds a file handle, not a copy).
    async fn get(&self, id: &str) -> std::io::Result<Option<axum::body::Body>> {
        match &self.place {
            Place::Memory(map) => Ok(map
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .map(axum::body::Body::from)),
            Place::Disk(dir) => match tokio::fs::File::open(dir.join(id)).await {
                Ok(file) => Ok(Some(axum::body::Body::from_stream(
                    tokio_util::io::ReaderStream::new(file),
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(DevError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// The uploader: an `authToken` header, or `Authorization: Bearer <IM token>`.
async fn uploader(state: &AppState, headers: &HeaderMap) -> Result<String, Response> {
    let db_failed = |e: crate::store::Error| {
        tracing::error!(error = %e, "database error");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "database error; see the imctl log",
        )
    };
    let status = if let Some(token) = headers.get(AUTH_TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        state.store.auth_user(token).await.map_err(db_failed)?
    } else {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                error(
                    StatusCode::UNAUTHORIZED,
                    "log in first: send the authToken header, or Authorization: Bearer <IM token>",
                )
            })?;
        let claims = state
            .im_tokens
            .verify(bearer.trim())
            .map_err(|e| error(StatusCode::UNAUTHORIZED, e.to_string()))?;
        state
            .store
            .user_status(&claims.sub)
            .await
            .map_err(db_failed)?
    };
    match status {
        Some((user, false)) => Ok(user.id),
        Some((user, true)) => Err(error(
            StatusCode::FORBIDDEN,
            format!("user {:?} is banned by an administrator", user.id),
        )),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "the login is not valid (expired, or the user is gone); log in again",
        )),
    }
}

fn content_type_of(value: Option<&str>) -> String {
    value
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[utoipa::path(post, path = "/media", tag = "media", security(("authToken" = []), ("imToken" = [])),
    request_body(description = "The file's bytes with its Content-Type, or multipart/form-data (the first field)", content(
        (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "application/octet-stream"), (String = "multipart/form-data"))),
    responses(
        (status = 201, description = "stored", body = Uploaded),
        (status = 400, description = "empty or unreadable", body = DevError),
        (status = 401, description = "no valid authToken or IM token", body = DevError),
        (status = 413, description = "larger than --max-upload", body = DevError),
        (status = 415, description = "a content type not accepted (refused before the body is read)", body = DevError),
        (status = 507, description = "the media quota (--media-quota) is used up", body = DevError)))]
pub async fn upload(State(state): State<AppState>, urls: PublicUrls, request: Request) -> Response {
    let user = match uploader(&state, request.headers()).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let declared = content_type_of(
        request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "uploads are limited to {} bytes (--max-upload)",
                state.max_upload
            ),
        )
    };
    let refused_type = |content_type: &str| {
        error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {content_type:?} is not accepted; use one of {}",
                ALLOWED.join(", ")
            ),
        )
    };
    let multipart = declared == "multipart/form-data";
    // Refused from the headers alone, before a byte of the body is read.
    if !multipart && !ALLOWED.contains(&declared.as_str()) {
        return refused_type(&declared);
    }
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A multipart body carries a little more than its file.
    let allowed = state.max_upload as u64 + if multipart { 64 * 1024 } else { 0 };
    if length.is_some_and(|n| n > allowed) {
        return too_big();
    }
    // Bytes in flight count towards the quota too: it bounds memory.
    let Some(mut reserved) = state.blobs.reserve(length.unwrap_or(allowed)) else {
        return error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the media quota of {} bytes is used up (--media-quota); raise it, or restart an --ephemeral stack",
                state.blobs.quota
            ),
        );
    };
    let (content_type, bytes) = if multipart {
        let mut form = match Multipart::from_request(request, &state).await {
            Ok(f) => f,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")),
        };
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => return error(StatusCode::BAD_REQUEST, "the form has no file field"),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_big(),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")),
        };
        let content_type = content_type_of(field.content_type());
        if !ALLOWED.contains(&content_type.as_str()) {
            return refused_type(&content_type);
        }
        match field.bytes().await {
            Ok(b) => (content_type, b),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_big(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the upload: {e}"),
                );
            }
        }
    } else {
        match Bytes::from_request(request, &state).await {
            Ok(b) => (declared, b),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_big(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the upload: {e}"),
                );
            }
        }
    };
    if bytes.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the upload is empty");
    }
    if bytes.len() > state.max_upload {
        return too_big();
    }
    reserved.shrink_to(bytes.len() as u64);
    let id = crate::token::random_token(16);
    let size = bytes.len() as i64;
    if let Err(e) = state.blobs.put(&id, bytes).await {
        tracing::error!(error = %e, "cannot store an upload");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot store the upload; see the imctl log",
        );
    }
    let media = Media {
        id: id.clone(),
        owner: user.clone(),
        content_type: content_type.clone(),
        size,
    };
    if let Err(e) = state.store.add_media(&media).await {
        tracing::error!(error = %e, "database error");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "database error; see the imctl log",
        );
    }
    reserved.keep();
    tracing::info!(user = ?user, size, content_type = %content_type, "media uploaded");
    let body = Uploaded {
        url: format!("{}/media/{id}", urls.app_server()),
        size,
        content_type,
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

#[utoipa::path(get, path = "/media/{id}", tag = "media", params(("id" = String, Path, description = "the id in the upload's URL")),
    responses((status = 200, description = "the file, with its content type", content_type = "application/octet-stream", body = Vec<u8>), (status = 404, description = "no such media", body = DevError)))]
pub async fn download(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    // Ids are hex we made; anything else cannot name a file.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(StatusCode::NOT_FOUND, "no such media");
    }
    let meta = match state.store.media(&id).await {
        Ok(Some(m)) => m,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such media"),
        Err(e) => {
            tracing::error!(error = %e, "database error");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "database error; see the imctl log",
            );
        }
    };
    match state.blobs.get(&id).await {
        Ok(Some(body)) => {
            let inline = ["image/", "video/", "audio/"]
                .iter()
                .any(|p| meta.content_type.starts_with(p));
            let disposition = if inline { "inline" } else { "attachment" };
            (
                [
                    (header::CONTENT_TYPE, meta.content_type),
                    (header::CONTENT_DISPOSITION, disposition.to_owned()),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                    // A streamed body has no length of its own; clients show progress with it.
                    (header::CONTENT_LENGTH, meta.size.to_string()),
                    (
                        header::CACHE_CONTROL,
                        "public, max-age=31536000, immutable".to_owned(),
                    ),
                ],
                body,
            )
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such media (its bytes are gone)"),
        Err(e) => {
            tracing::error!(error = %e, "cannot read an upload");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the upload; see the imctl log",
            )
        }
    }
}
