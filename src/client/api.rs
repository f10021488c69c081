//! A typed client of the JSON API (`/api/v1`), used by the command-line client (and by
//! anything else that talks to a filestore server over HTTP).

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (`code` is the API's error code).
    #[error("{message} (HTTP {status}, {code})")]
    Api { status: u16, code: String, message: String },
    /// The server could not be reached or the connection broke: worth retrying.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// Connection failures and 5xx/429 answers: the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code (`not_found`, `already_exists`...), for an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_decode() {
            ClientError::Protocol(e.to_string())
        } else {
            ClientError::Transport(e.to_string())
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// An entry as the server shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteEntry {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub kind: String,
    pub size: i64,
    pub sha1: Option<String>,
    pub mode: i64,
    pub mtime: String,
}

impl RemoteEntry {
    pub fn is_dir(&self) -> bool {
        self.kind == "dir"
    }
}

/// An entry as the id-based routes (`/entries/{id}`) show it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemoteNode {
    pub id: i64,
    /// `None` for the root.
    pub parent: Option<i64>,
    pub name: String,
    pub kind: String,
    pub size: i64,
    pub sha1: Option<String>,
    pub mode: i64,
    pub mtime_ms: i64,
    pub ctime_ms: i64,
    /// For files: lets the caller keep reading this content through
    /// [`Client::read_entry`] after the file is deleted or replaced.
    #[serde(default)]
    pub content_token: Option<String>,
}

impl RemoteNode {
    pub fn is_dir(&self) -> bool {
        self.kind == "dir"
    }
}

/// Where an upload goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadDest {
    /// A path from the user's root (answers are [`RemoteEntry`]).
    Path(String),
    /// A name in a directory given by id (answers are [`RemoteNode`]).
    Child { parent: i64, name: String },
    /// The file with this id, whose content is replaced wherever it is now (answers are
    /// [`RemoteNode`]).
    Entry(i64),
}

impl UploadDest {
    /// The destination fields of an upload or instant-upload body.
    fn fields(&self) -> serde_json::Map<String, Value> {
        let v = match self {
            UploadDest::Path(p) => json!({ "path": p }),
            UploadDest::Child { parent, name } => json!({ "parent": parent, "name": name }),
            UploadDest::Entry(id) => json!({ "entry": id }),
        };
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object literal"),
        }
    }
}

/// A change to an entry (`PATCH /entries/{id}`); `None` fields stay as they are.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EntryPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `"no"` (a taken name is an error) or `"posix"` (rename(2) rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Milliseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

/// An upload session as the server shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteUpload {
    pub id: String,
    pub chunk_size: u64,
    pub chunk_count: u64,
    pub received: Vec<u64>,
}

/// An open-ended upload session (`POST /uploads` without a size): chunks of a file still
/// being written, its size and SHA-1 declared at completion.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteOpenUpload {
    pub id: String,
    pub chunk_size: u64,
    #[serde(default)]
    pub received: Vec<u64>,
}

/// The challenge of an instant upload.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteChallenge {
    pub nonce: String,
    pub offset: u64,
    pub length: u64,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `/a/b` with each segment percent-encoded, for a path in a URL.
pub fn url_path(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{}", percent_encoding::utf8_percent_encode(s, SEGMENT)))
        .collect()
}

/// One name, percent-encoded as one URL path segment.
pub fn url_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // No overall timeout: a large upload or download takes as long as it takes;
            // a stalled connection is caught by the read timeout.
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("filestore/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// The same server and token with a connection pool of its own.
    pub fn with_own_connections(&self) -> Result<Client> {
        Client::new(&self.base, self.token.clone())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}/api/v1{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Sends and turns an error status into `ClientError::Api`.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        Err(ClientError::Api {
            status,
            code: v["error"]["code"].as_str().unwrap_or("unknown").to_string(),
            message: v["error"]["message"].as_str().unwrap_or("request failed").to_string(),
        })
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        Ok(self.send(req).await?.json().await?)
    }

    /// Signs in; returns the token and its expiry.
    pub async fn signin(&self, user: &str, password: &str) -> Result<(String, String)> {
        let v: Value = self
            .json(
                self.request(Method::POST, "/auth/signin")
                    .json(&json!({"username": user, "password": password})),
            )
            .await?;
        let token = v["token"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("no token".into()))?;
        Ok((token.to_string(), v["expires"].as_str().unwrap_or_default().to_string()))
    }

    pub async fn signout(&self) -> Result<()> {
        self.send(self.request(Method::POST, "/auth/signout")).await?;
        Ok(())
    }

    pub async fn stat(&self, path: &str) -> Result<RemoteEntry> {
        self.json(self.request(Method::GET, &format!("/stat{}", url_path(path))))
            .await
    }

    /// Every entry of a directory (all pages).
    pub async fn list(&self, path: &str) -> Result<Vec<RemoteEntry>> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let req = self
                .request(Method::GET, &format!("/list{}", url_path(path)))
                .query(&[("limit", "1000"), ("after", after.as_str())]);
            let v: Value = self.json(req).await?;
            let page: Vec<RemoteEntry> =
                serde_json::from_value(v["entries"].clone()).map_err(|e| ClientError::Protocol(e.to_string()))?;
            out.extend(page);
            match v["next"].as_str() {
                Some(n) => after = n.to_string(),
                None => return Ok(out),
            }
        }
    }

    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<RemoteEntry> {
        let req = self
            .request(Method::POST, &format!("/dirs{}", url_path(path)))
            .query(&[("parents", parents)]);
        self.json(req).await
    }

    pub async fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<RemoteEntry> {
        self.json(
            self.request(Method::POST, "/move")
                .json(&json!({"from": from, "to": to, "overwrite": overwrite})),
        )
        .await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        let req = self
            .request(Method::DELETE, &format!("/files{}", url_path(path)))
            .query(&[("recursive", recursive)]);
        self.send(req).await?;
        Ok(())
    }

    /// The response to a (possibly ranged) GET of a file.
    pub async fn get(&self, path: &str, from: u64, if_range: Option<&str>) -> Result<reqwest::Response> {
        let mut req = self.request(Method::GET, &format!("/files{}", url_path(path)));
        if from > 0 {
            req = req.header("range", format!("bytes={from}-"));
            if let Some(tag) = if_range {
                req = req.header("if-range", tag);
            }
        }
        self.send(req).await
    }

    /// Streams a body to `path` in one request.
    pub async fn put<S>(&self, path: &str, body: S, len: u64, overwrite: bool) -> Result<RemoteEntry>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        let req = self
            .request(Method::PUT, &format!("/files{}", url_path(path)))
            .query(&[("overwrite", overwrite)])
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(body));
        self.json(req).await
    }

    /// Instant upload to a path (see [`Client::instant_to`]).
    pub async fn instant(
        &self,
        path: &str,
        sha1: &str,
        size: u64,
        overwrite: bool,
        proof: Option<(&str, &str)>,
    ) -> Result<Instant> {
        self.instant_to(&UploadDest::Path(path.to_string()), sha1, size, overwrite, None, proof)
            .await
    }

    /// Instant upload: linked when the server has the content and the caller owns it or
    /// answers the challenge (`proof` is `(nonce, answer)`), else a challenge or a refusal.
    /// `T` is [`RemoteEntry`] for a path destination, [`RemoteNode`] for the others.
    pub async fn instant_to<T: DeserializeOwned>(
        &self,
        dest: &UploadDest,
        sha1: &str,
        size: u64,
        overwrite: bool,
        mtime: Option<i64>,
        proof: Option<(&str, &str)>,
    ) -> Result<Instant<T>> {
        let mut body = dest.fields();
        body.insert("sha1".into(), json!(sha1));
        body.insert("size".into(), json!(size));
        body.insert("overwrite".into(), json!(overwrite));
        if let Some(m) = mtime {
            body.insert("mtime".into(), json!(m));
        }
        if let Some((nonce, answer)) = proof {
            body.insert("nonce".into(), json!(nonce));
            body.insert("proof".into(), json!(answer));
        }
        let v: Value = self.json(self.request(Method::POST, "/instant").json(&body)).await?;
        if v["linked"].as_bool() == Some(true) {
            let e = serde_json::from_value(v["entry"].clone()).map_err(|e| ClientError::Protocol(e.to_string()))?;
            return Ok(Instant::Linked(e));
        }
        match v.get("challenge") {
            Some(c) => Ok(Instant::Challenge(
                serde_json::from_value(c.clone()).map_err(|e| ClientError::Protocol(e.to_string()))?,
            )),
            None => Ok(Instant::Refused),
        }
    }

    pub async fn upload_init(&self, path: &str, sha1: &str, size: u64, overwrite: bool) -> Result<RemoteUpload> {
        self.upload_init_to(&UploadDest::Path(path.to_string()), Some(sha1), size, overwrite)
            .await
    }

    /// Starts (or, with `sha1`, resumes) a chunked upload to `dest`. Without `sha1` the
    /// SHA-1 is declared at completion.
    pub async fn upload_init_to(
        &self,
        dest: &UploadDest,
        sha1: Option<&str>,
        size: u64,
        overwrite: bool,
    ) -> Result<RemoteUpload> {
        let mut body = dest.fields();
        if let Some(h) = sha1 {
            body.insert("sha1".into(), json!(h));
        }
        body.insert("size".into(), json!(size));
        body.insert("overwrite".into(), json!(overwrite));
        self.json(self.request(Method::POST, "/uploads").json(&body)).await
    }

    /// Starts an open-ended upload to `dest`: every chunk is up to `chunk_size` bytes, and
    /// size and SHA-1 are declared by [`Client::upload_complete_declared`].
    pub async fn upload_open(&self, dest: &UploadDest, overwrite: bool) -> Result<RemoteOpenUpload> {
        let mut body = dest.fields();
        body.insert("overwrite".into(), json!(overwrite));
        self.json(self.request(Method::POST, "/uploads").json(&body)).await
    }

    /// The chunks the server has of the open-ended upload `id`.
    pub async fn upload_open_status(&self, id: &str) -> Result<RemoteOpenUpload> {
        self.json(self.request(Method::GET, &format!("/uploads/{id}"))).await
    }

    /// Completes an upload declaring its size (required for an open-ended one) and, if
    /// given, its SHA-1: without one the server takes the bytes it received, whose chunks
    /// it checked one by one (see [`Client::upload_part`]).
    pub async fn upload_complete_declared<T: DeserializeOwned>(
        &self,
        id: &str,
        sha1: Option<&str>,
        size: u64,
    ) -> Result<T> {
        let body = match sha1 {
            Some(h) => json!({ "sha1": h, "size": size }),
            None => json!({ "size": size }),
        };
        let req = self
            .request(Method::POST, &format!("/uploads/{id}/complete"))
            .json(&body);
        self.json(req).await
    }

    /// Sends chunk `index` with its CRC-32 (`X-Chunk-Crc32`): the server refuses a chunk
    /// that arrives otherwise, before recording it. A few hundredths of a second per GiB.
    pub async fn upload_part(&self, id: &str, index: u64, data: Bytes) -> Result<()> {
        let crc = crc32fast::hash(&data);
        let req = self
            .request(Method::PUT, &format!("/uploads/{id}/parts/{index}"))
            .header("x-chunk-crc32", format!("{crc:08x}"));
        self.send(req.body(data)).await?;
        Ok(())
    }

    pub async fn upload_complete(&self, id: &str) -> Result<RemoteEntry> {
        self.upload_complete_as(id, None).await
    }

    /// Completes an upload; `T` as for [`Client::instant_to`]. `sha1` declares the SHA-1
    /// of an upload started without one.
    pub async fn upload_complete_as<T: DeserializeOwned>(&self, id: &str, sha1: Option<&str>) -> Result<T> {
        let mut req = self.request(Method::POST, &format!("/uploads/{id}/complete"));
        if let Some(h) = sha1 {
            req = req.json(&json!({ "sha1": h }));
        }
        self.json(req).await
    }

    /// The chunks the server has of upload `id`.
    pub async fn upload_status(&self, id: &str) -> Result<RemoteUpload> {
        self.json(self.request(Method::GET, &format!("/uploads/{id}"))).await
    }

    /// Abandons upload `id`; the server removes what it received.
    pub async fn upload_cancel(&self, id: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &format!("/uploads/{id}")))
            .await?;
        Ok(())
    }

    /// Streams a body to `dest` in one request: `PUT /files/{path}`,
    /// `PUT /entries/{parent}/children/{name}/content` or `PUT /entries/{id}/content`.
    /// `mode` applies to a file this creates, `mtime` (ms) is recorded; neither is sent for
    /// a path destination (that route has no such parameters).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_to<T, S>(
        &self,
        dest: &UploadDest,
        body: S,
        len: u64,
        overwrite: bool,
        mode: Option<u32>,
        mtime: Option<i64>,
    ) -> Result<T>
    where
        T: DeserializeOwned,
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        let mut q: Vec<(&str, String)> = Vec::new();
        let path = match dest {
            UploadDest::Path(p) => {
                q.push(("overwrite", overwrite.to_string()));
                format!("/files{}", url_path(p))
            }
            UploadDest::Child { parent, name } => {
                q.push(("overwrite", overwrite.to_string()));
                if let Some(m) = mode {
                    q.push(("mode", m.to_string()));
                }
                if let Some(m) = mtime {
                    q.push(("mtime", m.to_string()));
                }
                format!("/entries/{parent}/children/{}/content", url_segment(name))
            }
            UploadDest::Entry(id) => {
                if let Some(m) = mtime {
                    q.push(("mtime", m.to_string()));
                }
                format!("/entries/{id}/content")
            }
        };
        let req = self
            .request(Method::PUT, &path)
            .query(&q)
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(body));
        self.json(req).await
    }

    /// `GET /me`: the user and their usage (`usage.bytes`, `usage.stored_bytes`).
    pub async fn me(&self) -> Result<Value> {
        self.json(self.request(Method::GET, "/me")).await
    }

    /// The entry `id`.
    pub async fn entry(&self, id: i64) -> Result<RemoteNode> {
        self.json(self.request(Method::GET, &format!("/entries/{id}"))).await
    }

    /// The entry `name` in directory `parent`.
    pub async fn lookup(&self, parent: i64, name: &str) -> Result<RemoteNode> {
        self.json(self.request(
            Method::GET,
            &format!("/entries/{parent}/children/{}", url_segment(name)),
        ))
        .await
    }

    /// Up to `limit` (1..=1000) children of `dir` after `after`, in byte order of names,
    /// and the `after` of the next page (`None` on the last page).
    pub async fn children(
        &self,
        dir: i64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<RemoteNode>, Option<String>)> {
        let req = self
            .request(Method::GET, &format!("/entries/{dir}/children"))
            .query(&[("limit", limit.to_string()), ("after", after.unwrap_or("").to_string())]);
        let v: Value = self.json(req).await?;
        let page: Vec<RemoteNode> =
            serde_json::from_value(v["entries"].clone()).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((page, v["next"].as_str().map(str::to_string)))
    }

    /// A new directory `name` in `parent`.
    pub async fn mkdir_in(&self, parent: i64, name: &str, mode: Option<u32>) -> Result<RemoteNode> {
        let mut body = json!({"name": name, "kind": "dir"});
        if let Some(m) = mode {
            body["mode"] = json!(m);
        }
        self.json(
            self.request(Method::POST, &format!("/entries/{parent}/children"))
                .json(&body),
        )
        .await
    }

    /// A new empty file `name` in `parent`, with `mode` and the modification time `mtime`
    /// (ms); 409 `already_exists` if the name is taken.
    pub async fn create_file_in(&self, parent: i64, name: &str, mode: u32, mtime: i64) -> Result<RemoteNode> {
        let body = json!({"name": name, "kind": "file", "mode": mode, "mtime": mtime});
        self.json(
            self.request(Method::POST, &format!("/entries/{parent}/children"))
                .json(&body),
        )
        .await
    }

    /// Deletes the entry `name` in `parent` if it is a directory (`dir`) or a file; a
    /// directory must be empty. Returns `parent` as the deletion left it (`None` from a
    /// server that answers 204 without it).
    pub async fn delete_child(&self, parent: i64, name: &str, dir: bool) -> Result<Option<RemoteNode>> {
        #[derive(Deserialize)]
        struct Deleted {
            parent: RemoteNode,
        }
        let req = self
            .request(
                Method::DELETE,
                &format!("/entries/{parent}/children/{}", url_segment(name)),
            )
            .query(&[("kind", if dir { "dir" } else { "file" })]);
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(resp.json::<Deleted>().await?.parent))
    }

    /// Moves, renames and/or sets attributes of `id`.
    pub async fn patch_entry(&self, id: i64, patch: &EntryPatch) -> Result<RemoteNode> {
        self.json(self.request(Method::PATCH, &format!("/entries/{id}")).json(patch))
            .await
    }

    /// Deletes `id` (a non-empty directory needs `recursive`).
    pub async fn delete_entry(&self, id: i64, recursive: bool) -> Result<()> {
        let req = self
            .request(Method::DELETE, &format!("/entries/{id}"))
            .query(&[("recursive", recursive)]);
        self.send(req).await?;
        Ok(())
    }

    /// Up to `len` bytes of file `id` from `offset`; empty at or past the end. With
    /// `sha1`, only that content: the file's if it still holds it, else with `token` (the
    /// `content_token` of an earlier answer) that content even if the file was deleted or
    /// replaced meanwhile, else `ClientError::Api` 412 (or 404 for a deleted file).
    pub async fn read_entry(
        &self,
        id: i64,
        sha1: Option<&str>,
        token: Option<&str>,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mut q = Vec::new();
        if let Some(s) = sha1 {
            q.push(("sha1", s));
            if let Some(t) = token {
                q.push(("token", t));
            }
        }
        let req = self
            .request(Method::GET, &format!("/entries/{id}/content"))
            .query(&q)
            .header("range", format!("bytes={offset}-{}", offset.saturating_add(len - 1)));
        match self.send(req).await {
            Ok(resp) => {
                let full = resp.status() == StatusCode::OK;
                let body = resp.bytes().await?;
                if full {
                    // A server that ignored the range: cut it here.
                    let start = (offset as usize).min(body.len());
                    let end = (offset.saturating_add(len) as usize).min(body.len());
                    return Ok(body.slice(start..end));
                }
                Ok(body)
            }
            Err(ClientError::Api { status: 416, .. }) => Ok(Bytes::new()),
            Err(e) => Err(e),
        }
    }
}

/// What an instant-upload attempt gave.
#[derive(Debug)]
pub enum Instant<T = RemoteEntry> {
    Linked(T),
    Challenge(RemoteChallenge),
    Refused,
}
