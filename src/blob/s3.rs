//! Content in S3-compatible object storage (Ceph RGW, Aliyun OSS, AWS S3).
//!
//! Objects are named `key_prefix + sha1` and written once by the transfer worker
//! ([`S3Store::put_file`]), streamed from the staging file: memory per upload stays at about
//! `parallelism` read buffers, whatever the file or part size. Every upload is checked
//! against what we sent: each part's (or the single PUT's) `Content-MD5` is verified by the
//! server, and the stored object's ETag (the MD5, or the MD5 of the part MD5s and `-N` for a
//! multipart upload) must match what was computed from the file: as the server states it in
//! its answer to the PutObject or CompleteMultipartUpload, or, when the answer carries no
//! ETag, from a HeadObject that also checks the size.
//!
//! Client settings that matter for S3-compatible servers:
//! - checksums only when an operation requires them: by default the SDK sends streamed
//!   bodies as `aws-chunked` with a trailing CRC, which Ceph (Pacific) rejects with
//!   `XAmzContentSHA256Mismatch` and Aliyun OSS does not accept either;
//! - streamed bodies are sent as `UNSIGNED-PAYLOAD`; their integrity is `Content-MD5`;
//! - path-style addressing for Ceph, virtual-hosted (`bucket.endpoint`) for OSS.

use std::fmt;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::create_multipart_upload::{CreateMultipartUploadError, CreateMultipartUploadOutput};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream as SdkBody, Length};
use aws_sdk_s3::types::{BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{ResolveDns, SharedDnsResolver};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{BlobError, BlobStore, ByteStream};
use crate::config::S3Config;
use crate::meta::Content;

/// S3's limits: parts are 5 MiB to 5 GiB (the last may be smaller), at most 10,000 of them;
/// a single PUT is at most 5 GiB.
const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PART_SIZE: u64 = 5 << 30;
const MAX_PARTS: u64 = 10_000;

/// Read buffer for hashing and for the request bodies streamed from the file.
const READ_BUF: usize = 256 * 1024;

/// Page size of `ListObjectsV2` (the S3 maximum).
const LIST_PAGE: i32 = 1000;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for an answer, counted from the start of the request. A server that
/// takes a request and never answers (Ceph does so while its OSDs are full) would otherwise
/// hold a transfer forever. Requests with a body get one more second per MiB (slower than
/// 1 MiB/s counts as failure); CompleteMultipartUpload, which the server may take a while
/// to assemble, gets `COMPLETE_TIMEOUT`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(600);

/// A bucket of an S3-compatible object store, holding content under a key prefix.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    region: String,
    part_size: u64,
    parallelism: usize,
    list_page: i32,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("parallelism", &self.parallelism)
            .finish()
    }
}

/// A multipart upload that was started and neither completed nor aborted. `initiated` is in
/// seconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<i64>,
}

impl S3Store {
    /// A client for `cfg`. Makes no network call: [`S3Store::ping`] checks the store is
    /// reachable, [`S3Store::ensure_bucket`] creates the bucket.
    pub async fn new(cfg: &S3Config) -> Result<S3Store, BlobError> {
        S3Store::build(cfg, http_client(None))
    }

    /// Like [`S3Store::new`], with host names resolved by `resolver` instead of the
    /// system's resolver: virtual-hosted addressing (`BUCKET.s3.example`) against a server
    /// that has no DNS entry for every bucket, as in tests.
    pub async fn with_resolver(cfg: &S3Config, resolver: impl ResolveDns + 'static) -> Result<S3Store, BlobError> {
        S3Store::build(cfg, http_client(Some(SharedDnsResolver::new(resolver))))
    }

    fn build(cfg: &S3Config, http: SharedHttpClient) -> Result<S3Store, BlobError> {
        let endpoint = cfg.endpoint.trim_end_matches('/');
        if endpoint.is_empty() {
            return Err(BlobError::Config("s3.endpoint is empty".into()));
        }
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(BlobError::Config(format!(
                "s3.endpoint must start with http:// or https://: {endpoint}"
            )));
        }
        if cfg.bucket.is_empty() {
            return Err(BlobError::Config("s3.bucket is empty".into()));
        }
        if cfg.access_key.is_empty() || cfg.secret_key.is_empty() {
            return Err(BlobError::Config("s3.access_key and s3.secret_key must be set".into()));
        }
        let region = if cfg.region.is_empty() {
            "us-east-1"
        } else {
            cfg.region.as_str()
        };
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .endpoint_url(endpoint)
            .region(Region::new(region.to_owned()))
            .credentials_provider(Credentials::new(
                &cfg.access_key,
                &cfg.secret_key,
                None,
                None,
                "filestore-config",
            ))
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(timeouts(ANSWER_TIMEOUT))
            .build();
        Ok(S3Store {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            prefix: cfg.key_prefix.clone(),
            region: region.to_owned(),
            part_size: cfg.part_size.clamp(MIN_PART_SIZE, MAX_PART_SIZE),
            parallelism: cfg.parallelism.max(1),
            list_page: LIST_PAGE,
        })
    }

    /// The page size of [`S3Store::list_keys`] (for tests of the paging).
    pub fn with_list_page_size(mut self, keys: i32) -> S3Store {
        self.list_page = keys.clamp(1, LIST_PAGE);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Part size of multipart uploads, and the size from which they are used: the
    /// configured value within S3's limits (5 MiB to 5 GiB).
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// The SDK client, for what this type does not wrap (diagnostics, tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The object key of content `sha1`.
    pub fn key(&self, sha1: &str) -> String {
        format!("{}{}", self.prefix, sha1)
    }

    /// Uploads the file at `path` (`size` bytes) to `key`, streamed from disk: one PutObject
    /// below the part size, else a multipart upload with `parallelism` parts in flight,
    /// aborted on failure (also when this future is dropped). Memory stays at a few read
    /// buffers per part in flight.
    ///
    /// Verified end to end: the server checks each request body against its `Content-MD5`,
    /// and the stored object must then have the ETag computed from the file (its MD5; for
    /// multipart, the MD5 of the part MD5s followed by `-N`, which also pins the parts and so
    /// the size). The ETag in the server's answer to the PutObject (or the
    /// CompleteMultipartUpload) is that statement; only a server that answers without one
    /// costs a HeadObject, which then checks the ETag and the size. The file must not change
    /// during the upload (staged content never does).
    #[tracing::instrument(skip(self, path))]
    pub async fn put_file(&self, key: &str, path: &Path, size: u64) -> Result<(), BlobError> {
        // A stat, not worth a trip to the blocking pool.
        let on_disk = std::fs::metadata(path)?.len();
        if on_disk != size {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("{} has {on_disk} bytes, expected {size}", path.display()),
            )
            .into());
        }
        let (etag, confirmed) = if size < self.part_size {
            let digest = md5_of_range(path, 0, size).await?;
            let body = file_body(path, 0, size).await?;
            self.put_single(key, digest, body, size).await?
        } else {
            self.put_multipart(key, path, size).await?
        };
        self.check_stored(key, size, &etag, confirmed).await
    }

    /// Uploads `data` (an inline content, a few KiB) to `key` in one PutObject, verified
    /// like [`put_file`](Self::put_file).
    #[tracing::instrument(skip(self, data), fields(size = data.len()))]
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), BlobError> {
        let size = data.len() as u64;
        let digest: [u8; 16] = Md5::digest(&data).into();
        let (etag, confirmed) = self.put_single(key, digest, SdkBody::from(data), size).await?;
        self.check_stored(key, size, &etag, confirmed).await
    }

    /// After an upload whose answer did not state the ETag (`confirmed` false), a
    /// HeadObject checks the stored object's ETag and size.
    async fn check_stored(&self, key: &str, size: u64, etag: &str, confirmed: bool) -> Result<(), BlobError> {
        if confirmed {
            tracing::debug!(etag, "uploaded; verified by the server's answer");
            return Ok(());
        }
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| remote("HeadObject", key, e))?;
        let stored = head.content_length().unwrap_or(-1);
        if u64::try_from(stored).ok() != Some(size) {
            return Err(mismatch(format!(
                "after upload, {key} has {stored} bytes, expected {size}"
            )));
        }
        let stored_etag = unquote(head.e_tag().unwrap_or_default());
        if !stored_etag.eq_ignore_ascii_case(etag) {
            return Err(mismatch(format!(
                "after upload, {key} has ETag {stored_etag}, expected {etag}"
            )));
        }
        tracing::debug!(etag, "uploaded and verified by HeadObject");
        Ok(())
    }

    /// One PutObject of `body` (`size` bytes whose MD5 is `digest`); returns the expected
    /// ETag and whether the answer confirmed it.
    async fn put_single(
        &self,
        key: &str,
        digest: [u8; 16],
        body: SdkBody,
        size: u64,
    ) -> Result<(String, bool), BlobError> {
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest))
            .body(body)
            .customize()
            .config_override(upload_timeouts(size))
            .send()
            .await
            .map_err(|e| remote("PutObject", key, e))?;
        let etag = hex::encode(digest);
        let confirmed = answered_etag("PutObject", key, out.e_tag(), &etag)?;
        Ok((etag, confirmed))
    }

    /// A multipart upload; returns the expected ETag and whether the answer confirmed it.
    ///
    /// Each part is a task of its own. On failure, the parts in flight are let finish before
    /// the upload is aborted, so that nothing is stored for the upload after its abort.
    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> Result<(String, bool), BlobError> {
        let part_size = self.part_size_for(size);
        let parts = size.div_ceil(part_size);
        // Sent from a task of its own: a caller that gives up while the request is out still
        // gets the upload aborted once the answer (and so its id) arrives.
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send();
        let mut creating = CreatingUpload {
            task: Some(tokio::spawn(create)),
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        };
        let created = creating.wait().await?;
        let Some(upload_id) = created.upload_id() else {
            return Err(BlobError::Remote {
                transient: true,
                message: format!("CreateMultipartUpload {key}: no upload id in the answer"),
            });
        };
        let mut upload = PendingMultipart {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            in_flight: FuturesUnordered::new(),
            armed: true,
        };
        tracing::debug!(upload_id, parts, part_size, "multipart upload started");

        let mut done: Vec<Option<(CompletedPart, [u8; 16])>> = vec![None; parts as usize];
        let mut failure: Option<BlobError> = None;
        let mut next = 0;
        loop {
            while failure.is_none() && next < parts && upload.in_flight.len() < self.parallelism {
                let (store, key, upload_id, path) =
                    (self.clone(), key.to_owned(), upload_id.to_owned(), path.to_owned());
                let index = next;
                let part = async move {
                    let part = store.upload_part(&key, &upload_id, &path, index, part_size, size).await;
                    (index, part)
                };
                upload
                    .in_flight
                    .push(tokio::spawn(part.instrument(tracing::Span::current())));
                next += 1;
            }
            match upload.in_flight.next().await {
                None => break,
                Some(Ok((index, Ok(part)))) => done[index as usize] = Some(part),
                Some(Ok((_, Err(e)))) => {
                    failure.get_or_insert(e);
                }
                Some(Err(e)) => {
                    failure.get_or_insert(BlobError::Io(std::io::Error::other(format!("part upload task: {e}"))));
                }
            }
        }
        if let Some(e) = failure {
            upload.abort().await;
            return Err(e);
        }
        let done: Vec<(CompletedPart, [u8; 16])> = done.into_iter().map(|p| p.expect("every part uploaded")).collect();
        let mut of_parts = Md5::new();
        for (_, digest) in &done {
            of_parts.update(digest);
        }
        let etag = format!("{}-{parts}", hex::encode(of_parts.finalize()));
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(done.into_iter().map(|(part, _)| part).collect()))
            .build();
        let out = match self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().timeout_config(timeouts(COMPLETE_TIMEOUT)))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                upload.abort().await;
                return Err(remote("CompleteMultipartUpload", key, e));
            }
        };
        upload.disarm();
        let confirmed = answered_etag("CompleteMultipartUpload", key, out.e_tag(), &etag)?;
        Ok((etag, confirmed))
    }

    /// Part `index` (from 0): hashed, then streamed from the file with its `Content-MD5`.
    /// Returns the part and its MD5.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        index: u64,
        part_size: u64,
        size: u64,
    ) -> Result<(CompletedPart, [u8; 16]), BlobError> {
        let offset = index * part_size;
        let len = part_size.min(size - offset);
        let number = i32::try_from(index + 1).expect("at most 10,000 parts");
        let digest = md5_of_range(path, offset, len).await?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len as i64)
            .content_md5(base64::engine::general_purpose::STANDARD.encode(digest))
            .body(file_body(path, offset, len).await?)
            .customize()
            .config_override(upload_timeouts(len))
            .send()
            .await
            .map_err(|e| remote("UploadPart", key, e))?;
        let etag = out.e_tag().unwrap_or_default();
        let expected = hex::encode(digest);
        if !unquote(etag).eq_ignore_ascii_case(&expected) {
            return Err(mismatch(format!(
                "UploadPart {key} #{number}: ETag {etag}, expected {expected}"
            )));
        }
        let part = CompletedPart::builder().part_number(number).e_tag(etag).build();
        Ok((part, digest))
    }

    /// The configured part size, raised (to whole MiB) when the object would otherwise
    /// need more than 10,000 parts.
    fn part_size_for(&self, size: u64) -> u64 {
        let least = size.div_ceil(MAX_PARTS);
        if least <= self.part_size {
            self.part_size
        } else {
            least.div_ceil(1 << 20) << 20
        }
    }

    /// The object's size, or `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(remote("HeadObject", key, e)),
        }
    }

    /// Deletes the object; a missing object is fine.
    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchKey") => Ok(()),
            Err(e) => Err(remote("DeleteObject", key, e)),
        }
    }

    /// Every key under the key prefix (all pages), in the store's order.
    pub async fn list_keys(&self) -> Result<Vec<String>, BlobError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .max_keys(self.list_page)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| remote("ListObjectsV2", &self.prefix, e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(keys),
            }
        }
    }

    /// Multipart uploads under the key prefix that were started and neither completed nor
    /// aborted (a crashed worker leaves them; they use space until aborted).
    pub async fn pending_uploads(&self) -> Result<Vec<PendingUpload>, BlobError> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| remote("ListMultipartUploads", &self.prefix, e))?;
            uploads.extend(page.uploads().iter().filter_map(|u| {
                Some(PendingUpload {
                    key: u.key()?.to_owned(),
                    upload_id: u.upload_id()?.to_owned(),
                    initiated: u.initiated().map(|t| t.secs()),
                })
            }));
            if page.is_truncated() != Some(true) {
                return Ok(uploads);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(uploads);
            }
        }
    }

    /// Aborts a pending multipart upload; an unknown one is fine.
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), BlobError> {
        abort(&self.client, &self.bucket, key, upload_id).await
    }

    /// Creates the bucket unless it exists.
    pub async fn ensure_bucket(&self) -> Result<(), BlobError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(remote("HeadBucket", &self.bucket, e)),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            // Another gateway created it meanwhile.
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(remote("CreateBucket", &self.bucket, e)),
        }
    }

    /// A URL that downloads `key` without credentials until `ttl` has passed, as an
    /// attachment named `filename` (`Content-Disposition` with an RFC 5987 `filename*`,
    /// and a content type guessed from the name).
    pub async fn presign_get(&self, key: &str, ttl: Duration, filename: &str) -> Result<String, BlobError> {
        let presigning = PresigningConfig::expires_in(ttl)
            .map_err(|e| BlobError::Config(format!("presigned URL lifetime {ttl:?}: {e}")))?;
        let content_type = mime_guess::from_path(filename).first_or_octet_stream();
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(disposition(filename))
            .response_content_type(content_type.essence_str())
            .presigned(presigning)
            .await
            .map_err(|e| remote("presign GetObject", key, e))?;
        Ok(request.uri().to_owned())
    }

    /// Whether the bucket answers with these credentials (HeadBucket): readiness checks.
    pub async fn ping(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| remote("HeadBucket", &self.bucket, e))
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    /// A ranged GET, streamed as the server sends it.
    async fn read(&self, content: &Content, offset: u64, len: u64) -> Result<ByteStream, BlobError> {
        if len == 0 {
            return Ok(futures_util::stream::empty().boxed());
        }
        let key = content.object_key.clone().unwrap_or_else(|| self.key(&content.sha1));
        let last = offset + len - 1;
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .range(format!("bytes={offset}-{last}"))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchKey") => return Err(BlobError::Missing(key)),
            Err(e) => return Err(remote("GetObject", &key, e)),
        };
        let got = out.content_length().unwrap_or(-1);
        if u64::try_from(got).ok() != Some(len) {
            return Err(BlobError::Remote {
                transient: false,
                message: format!("GetObject {key} bytes {offset}-{last}: {got} bytes came back, expected {len}"),
            });
        }
        let body = futures_util::stream::try_unfold(out.body, |mut body| async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Ok(Some((chunk, body))),
                Ok(None) => Ok(None),
                Err(e) => Err(std::io::Error::other(e)),
            }
        });
        Ok(body.boxed())
    }
}

impl BlobError {
    /// Whether trying again later may succeed: the network, timeouts, a busy or failing
    /// server, a verification mismatch, local disk trouble. Not: refused requests, a missing
    /// bucket or object, a configuration that cannot work, a body over the limit.
    pub fn is_transient(&self) -> bool {
        match self {
            BlobError::Remote { transient, .. } => *transient,
            BlobError::Io(e) => e.kind() != ErrorKind::InvalidData,
            BlobError::TooLarge { .. } | BlobError::Body(_) | BlobError::Missing(_) | BlobError::Config(_) => false,
        }
    }
}

type CreateResult = Result<CreateMultipartUploadOutput, SdkError<CreateMultipartUploadError, HttpResponse>>;

/// A CreateMultipartUpload request in flight. Dropped before the answer came, it leaves a
/// task that aborts the upload the answer names.
struct CreatingUpload {
    task: Option<JoinHandle<CreateResult>>,
    client: Client,
    bucket: String,
    key: String,
}

impl CreatingUpload {
    async fn wait(&mut self) -> Result<CreateMultipartUploadOutput, BlobError> {
        let task = self.task.as_mut().expect("waited once");
        let answer = task.await;
        self.task = None;
        match answer {
            Ok(Ok(created)) => Ok(created),
            Ok(Err(e)) => Err(remote("CreateMultipartUpload", &self.key, e)),
            Err(e) => Err(BlobError::Io(std::io::Error::other(format!(
                "CreateMultipartUpload task: {e}"
            )))),
        }
    }
}

impl Drop for CreatingUpload {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, bucket, key) = (
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
        );
        runtime.spawn(async move {
            if let Ok(Ok(created)) = task.await {
                if let Some(upload_id) = created.upload_id() {
                    if let Err(e) = abort(&client, &bucket, &key, upload_id).await {
                        tracing::warn!(key, upload_id, "aborting a cancelled upload: {e}");
                    }
                }
            }
        });
    }
}

/// A part being uploaded by its own task: its index, and the part with its MD5.
type PartTask = JoinHandle<(u64, Result<(CompletedPart, [u8; 16]), BlobError>)>;

/// A started multipart upload, aborted unless completed: a failed or cancelled upload
/// leaves no parts behind. The failure paths abort and wait. When the upload's future is
/// dropped (the caller gave up on it), a spawned task waits for the parts in flight (their
/// tasks run on) and then aborts.
struct PendingMultipart {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    in_flight: FuturesUnordered<PartTask>,
    armed: bool,
}

impl PendingMultipart {
    async fn abort(mut self) {
        self.armed = false;
        while self.in_flight.next().await.is_some() {}
        if let Err(e) = abort(&self.client, &self.bucket, &self.key, &self.upload_id).await {
            tracing::warn!(
                key = self.key,
                upload_id = self.upload_id,
                "aborting a failed upload: {e}"
            );
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingMultipart {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                key = self.key,
                upload_id = self.upload_id,
                "upload dropped outside a runtime: not aborted"
            );
            return;
        };
        let (client, bucket) = (self.client.clone(), std::mem::take(&mut self.bucket));
        let (key, upload_id) = (std::mem::take(&mut self.key), std::mem::take(&mut self.upload_id));
        let mut in_flight = std::mem::take(&mut self.in_flight);
        runtime.spawn(async move {
            while in_flight.next().await.is_some() {}
            if let Err(e) = abort(&client, &bucket, &key, &upload_id).await {
                tracing::warn!(key, upload_id, "aborting a cancelled upload: {e}");
            }
        });
    }
}

async fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Result<(), BlobError> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
        Err(e) => Err(remote("AbortMultipartUpload", key, e)),
    }
}

fn timeouts(answer: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(answer)
        .build()
}

/// The timeouts of a request that sends `len` bytes.
fn upload_timeouts(len: u64) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(timeouts(ANSWER_TIMEOUT + Duration::from_secs(len >> 20)))
}

/// hyper 1 + rustls on ring (the TLS stack reqwest already brings), with the system's
/// trusted roots, and the system's resolver unless another is given.
fn http_client(resolver: Option<SharedDnsResolver>) -> SharedHttpClient {
    let builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring));
    match resolver {
        Some(resolver) => builder.build_with_resolver(resolver),
        None => builder.build_https(),
    }
}

/// `len` bytes of the file from `offset`, streamed (re-read from the file if the SDK retries).
async fn file_body(path: &Path, offset: u64, len: u64) -> Result<SdkBody, BlobError> {
    if len == 0 {
        return Ok(SdkBody::from_static(b""));
    }
    SdkBody::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .buffer_size(READ_BUF)
        .build()
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))
}

/// The MD5 of `len` bytes of the file from `offset`, read on the blocking pool.
async fn md5_of_range(path: &Path, offset: u64, len: u64) -> std::io::Result<[u8; 16]> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let mut hasher = Md5::new();
        let mut buf = vec![0u8; READ_BUF.min(len as usize).max(1)];
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let want = buf.len().min((end - at) as usize);
            let n = file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("{} ends at {at}, expected {end} bytes", path.display()),
                ));
            }
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        Ok(hasher.finalize().into())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// An ETag without its quotes.
fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// Checks the ETag a write's answer states for the stored object against `expected`:
/// `Ok(true)` when it matches, `Ok(false)` when the answer has none (the caller must look),
/// a transient error when it differs.
fn answered_etag(op: &str, key: &str, answered: Option<&str>, expected: &str) -> Result<bool, BlobError> {
    let answered = unquote(answered.unwrap_or_default());
    if answered.is_empty() {
        return Ok(false);
    }
    if !answered.eq_ignore_ascii_case(expected) {
        return Err(mismatch(format!("{op} {key}: ETag {answered}, expected {expected}")));
    }
    Ok(true)
}

fn mismatch(message: String) -> BlobError {
    // The bytes were damaged on the way or the object was replaced meanwhile: uploading
    // again is the cure.
    BlobError::Remote {
        transient: true,
        message,
    }
}

fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// The SDK's error as ours, tagged retryable or not.
fn remote<E>(op: &str, key: &str, err: SdkError<E, HttpResponse>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = match &err {
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(s) => transient_answer(s.raw().status().as_u16(), err.code()),
        // Timeouts, malformed or cut-off answers, and whatever the SDK adds later.
        _ => true,
    };
    BlobError::Remote {
        transient,
        message: format!("S3 {op} {key}: {}", DisplayErrorContext(&err)),
    }
}

/// Whether an error answer from the server may go away when asked again.
fn transient_answer(status: u16, code: Option<&str>) -> bool {
    match code {
        // Throttling and server trouble; a body damaged on the way (BadDigest); an upload
        // aborted under us (by a cleanup of stale uploads): a new upload can succeed.
        Some(
            "SlowDown"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "OperationAborted"
            | "BadDigest"
            | "NoSuchUpload"
            | "RequestTimeTooSkewed",
        ) => true,
        _ => status >= 500 || status == 408 || status == 429,
    }
}

/// RFC 5987 attr-char: what may stay unencoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="ascii fallback"; filename*=UTF-8''percent-encoded`.
fn disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert!(transient_answer(503, Some("SlowDown")));
        assert!(transient_answer(500, None));
        assert!(transient_answer(400, Some("BadDigest")));
        assert!(transient_answer(429, None));
        assert!(!transient_answer(403, Some("AccessDenied")));
        assert!(!transient_answer(403, Some("QuotaExceeded")));
        assert!(!transient_answer(404, Some("NoSuchBucket")));
        assert!(!transient_answer(400, Some("XAmzContentSHA256Mismatch")));
    }

    #[test]
    fn dispositions_carry_filename_star() {
        assert_eq!(
            disposition("a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        let d = disposition("résumé \"x\".pdf");
        assert!(d.starts_with("attachment; filename=\"r_sum_ _x_.pdf\""), "{d}");
        assert!(d.ends_with("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf"), "{d}");
    }

    #[test]
    fn many_parts_raise_the_part_size() {
        let cfg = S3Config {
            endpoint: "http://127.0.0.1:1".into(),
            access_key: "a".into(),
            secret_key: "b".into(),
            part_size: 1,
            ..Default::default()
        };
        let store = S3Store::build(&cfg, http_client(None)).expect("store");
        assert_eq!(store.part_size(), MIN_PART_SIZE);
        assert_eq!(store.part_size_for(40 << 20), MIN_PART_SIZE);
        let huge = 100u64 << 30;
        let p = store.part_size_for(huge);
        assert!(huge.div_ceil(p) <= MAX_PARTS && p % (1 << 20) == 0, "{p}");
    }
}
