//! A typed client of the JSON API (`/api/v1`), used by the command-line client (and by
//! anything else that talks to a filestore server over HTTP).

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
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

/// An upload session as the server shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteUpload {
    pub id: String,
    pub chunk_size: u64,
    pub chunk_count: u64,
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

/// `/a/b` with each segment percent-encoded, for a path in a URL.
pub fn url_path(path: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{}", percent_encoding::utf8_percent_encode(s, SEGMENT)))
        .collect()
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

    /// Instant upload: `Ok(Ok(entry))` when linked, `Ok(Err(challenge))` when the server
    /// wants a proof, `Ok(Err(None))`... expressed as the enum below.
    pub async fn instant(
        &self,
        path: &str,
        sha1: &str,
        size: u64,
        overwrite: bool,
        proof: Option<(&str, &str)>,
    ) -> Result<Instant> {
        let mut body = json!({"path": path, "sha1": sha1, "size": size, "overwrite": overwrite});
        if let Some((nonce, answer)) = proof {
            body["nonce"] = json!(nonce);
            body["proof"] = json!(answer);
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
        let body = json!({"path": path, "sha1": sha1, "size": size, "overwrite": overwrite});
        self.json(self.request(Method::POST, "/uploads").json(&body)).await
    }

    pub async fn upload_part(&self, id: &str, index: u64, data: Bytes, sha1: &str) -> Result<()> {
        let req = self
            .request(Method::PUT, &format!("/uploads/{id}/parts/{index}"))
            .header("x-chunk-sha1", sha1)
            .body(data);
        self.send(req).await?;
        Ok(())
    }

    pub async fn upload_complete(&self, id: &str) -> Result<RemoteEntry> {
        self.json(self.request(Method::POST, &format!("/uploads/{id}/complete")))
            .await
    }
}

/// What an instant-upload attempt gave.
#[derive(Debug)]
pub enum Instant {
    Linked(RemoteEntry),
    Challenge(RemoteChallenge),
    Refused,
}
