//! Uploads and downloads that survive interruptions.
//!
//! Upload: hash the file locally, try an instant upload (answering the server's challenge
//! from the local bytes), else a chunked upload with several chunks in flight. The
//! server keeps the session, so after Ctrl-C, a crash of the client or a restart of the
//! server, running the same command again (or the retry loop of this one) asks the server
//! which chunks it has and sends only the rest.
//!
//! A large file (at least [`OVERLAP_MIN`]) is not hashed first: its chunks go out while
//! it is hashed, in a session whose SHA-1 is declared at completion, and the instant
//! upload is tried as soon as the hash is known (if it links, the session is cancelled).
//! Hashing first would add a full read of the file (0.6 s per GiB here) before the first
//! byte is sent. Such a session cannot be found again by its content, so the client keeps
//! its id in a small record in its config dir ([`ResumeRecord`]) until it completes.
//!
//! Download: bytes go to `LOCAL.filestore-part`; an interrupted download resumes with a
//! `Range` request guarded by `If-Range` (so changed content starts over), and the SHA-1 of
//! the whole file is checked before it is renamed into place.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use sha1::Digest;

use super::api::{Client, ClientError, Instant, RemoteEntry, Result, UploadDest};
use super::progress::Progress;

/// How long a transfer keeps retrying a server that does not answer (a restart, a
/// network blip) before giving up.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Runs `op` until it succeeds, fails for good, or transient failures last `RETRY_FOR`.
pub async fn retry<T, F, Fut>(what: &str, progress: Option<&Progress>, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    Retry::reporting(progress.cloned()).run(what, op).await
}

/// How long transient failures (connection refused or broken, 5xx, 429) are retried,
/// with exponential backoff from 200 ms to 5 s, and whether any happened.
#[derive(Default)]
pub struct Retry {
    /// Give up (returning the last error) once failures have lasted this long.
    pub limit: Duration,
    /// Where to say that a retry is going on.
    pub progress: Option<Progress>,
    /// Set once any attempt failed transiently: a request may then have taken effect
    /// without its answer arriving, so a "name taken" that follows can be our own doing.
    pub saw_transient: AtomicBool,
}

impl Retry {
    /// A command-line transfer's policy: retries for [`RETRY_FOR`], says so on `progress`.
    pub fn reporting(progress: Option<Progress>) -> Retry {
        Retry {
            limit: RETRY_FOR,
            progress,
            ..Retry::default()
        }
    }

    pub fn within(limit: Duration) -> Retry {
        Retry {
            limit,
            ..Retry::default()
        }
    }

    /// Runs `op` until it succeeds, fails for good, or transient failures last `limit`.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        let mut warned = false;
        loop {
            match op().await {
                Err(e) if e.is_transient() => {
                    self.saw_transient.store(true, Ordering::Relaxed);
                    if started.elapsed() >= self.limit {
                        return Err(e);
                    }
                    if !warned {
                        match &self.progress {
                            Some(p) => p.note(&format!("{what}: {e}; retrying")),
                            None => tracing::info!(error = %e, "{what}: retrying"),
                        }
                        warned = true;
                    }
                    let left = self.limit.saturating_sub(started.elapsed());
                    tokio::time::sleep(delay.min(left.max(Duration::from_millis(10)))).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    pub fn saw_transient(&self) -> bool {
        self.saw_transient.load(Ordering::Relaxed)
    }
}

/// SHA-1 of a file, read in 1 MiB blocks on a blocking thread.
pub async fn sha1_file(path: &Path, progress: Option<Progress>) -> std::io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut h = sha1::Sha1::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            if let Some(p) = &progress {
                p.add(n as u64);
            }
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?
}

fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// How an upload went. `T` is [`RemoteEntry`] for a path destination, the id-based
/// [`super::api::RemoteNode`] otherwise.
#[derive(Debug)]
pub struct Uploaded<T = RemoteEntry> {
    pub entry: T,
    pub instant: bool,
    /// Chunks the server already had (a resumed upload).
    pub resumed_chunks: u64,
}

/// Files at least this large are sent while they are hashed (see the module docs); below
/// it, the hash costs less than the round trips a second session would.
pub const OVERLAP_MIN: u64 = 16 << 20;

/// Uploads `local` to `remote` (replacing a file there unless `overwrite` is false), with
/// `parallel` chunks in flight. `hash_first` hashes a large file before sending any of it.
pub async fn upload(
    client: &Client,
    local: &Path,
    remote: &str,
    overwrite: bool,
    parallel: usize,
    hash_first: bool,
) -> Result<Uploaded> {
    let size = std::fs::metadata(local)?.len();
    let label = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if size >= OVERLAP_MIN && !hash_first {
        return upload_while_hashing(client, local, remote, overwrite, parallel, &label).await;
    }
    let hashing = Progress::new(&format!("{label} (hashing)"), size);
    let sha1 = sha1_file(local, Some(hashing.clone())).await?;
    hashing.finish("hashed");
    let progress = Progress::new(&label, size);
    let policy = Retry::reporting(Some(progress.clone()));
    let job = UploadJob::to_path(local, remote, &sha1, size, overwrite, parallel);
    let done = upload_to(client, &job, &policy).await?;
    progress.set(size);
    progress.finish(if done.instant {
        "already on the server: linked without sending the bytes"
    } else {
        "uploaded"
    });
    Ok(done)
}

/// An upload of a local file whose size and SHA-1 are known (not hashed again).
#[derive(Debug, Clone)]
pub struct UploadJob<'a> {
    pub local: &'a Path,
    pub dest: UploadDest,
    /// Lowercase hex SHA-1 of `local`.
    pub sha1: &'a str,
    pub size: u64,
    /// Replace an existing file at a path or child destination (an entry destination
    /// always replaces).
    pub overwrite: bool,
    /// Modification time to record (ms), where the route takes one (instant uploads and
    /// single PUTs to id destinations).
    pub mtime: Option<i64>,
    /// Mode of a file a single PUT to a child destination creates.
    pub mode: Option<u32>,
    /// Chunks in flight.
    pub parallel: usize,
    /// Files smaller than this skip the instant-upload attempt (its round trips cost more
    /// than sending the bytes).
    pub instant_min: u64,
    /// Files smaller than this that the server does not have go in one PUT instead of a
    /// chunked upload.
    pub single_put_below: u64,
}

impl<'a> UploadJob<'a> {
    /// The command line's upload: to a path, every file tried as an instant upload first,
    /// the rest chunked.
    fn to_path(local: &'a Path, remote: &str, sha1: &'a str, size: u64, overwrite: bool, parallel: usize) -> Self {
        UploadJob {
            local,
            dest: UploadDest::Path(remote.to_string()),
            sha1,
            size,
            overwrite,
            mtime: None,
            mode: None,
            parallel,
            instant_min: 0,
            single_put_below: 0,
        }
    }
}

/// Reads the file for a request body, in 256 KiB pieces.
fn file_body(
    local: &Path,
) -> std::io::Result<impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static> {
    let f = std::fs::File::open(local)?;
    Ok(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::from_std(f),
        256 << 10,
    ))
}

/// Instant upload of `job` if the server has the content (answering its challenge from
/// the local bytes); `None` when the bytes must be sent.
pub async fn try_instant<T: DeserializeOwned>(
    client: &Client,
    job: &UploadJob<'_>,
    policy: &Retry,
) -> Result<Option<T>> {
    let first = policy
        .run("instant upload", || {
            client.instant_to::<T>(&job.dest, job.sha1, job.size, job.overwrite, job.mtime, None)
        })
        .await?;
    Ok(match first {
        Instant::Linked(e) => Some(e),
        Instant::Challenge(c) => {
            let local = job.local.to_path_buf();
            let (offset, length) = (c.offset, c.length);
            let range = tokio::task::spawn_blocking(move || read_range(&local, offset, length))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
            let answer = crate::instant::answer(&c.nonce, &range);
            match policy
                .run("instant upload", || {
                    client.instant_to::<T>(
                        &job.dest,
                        job.sha1,
                        job.size,
                        job.overwrite,
                        job.mtime,
                        Some((&c.nonce, &answer)),
                    )
                })
                .await?
            {
                Instant::Linked(e) => Some(e),
                _ => None,
            }
        }
        Instant::Refused => None,
    })
}

/// The whole upload: instant when the server has the content, else one PUT for a small
/// file, else a resumable chunked upload with `job.parallel` chunks in flight. Transient
/// failures are retried as `policy` says; a chunked upload resumes where it stopped.
pub async fn upload_to<T: DeserializeOwned>(
    client: &Client,
    job: &UploadJob<'_>,
    policy: &Retry,
) -> Result<Uploaded<T>> {
    if job.size >= job.instant_min {
        if let Some(entry) = try_instant::<T>(client, job, policy).await? {
            return Ok(Uploaded {
                entry,
                instant: true,
                resumed_chunks: 0,
            });
        }
    }
    if job.size < job.single_put_below {
        let entry = policy
            .run("uploading", || async {
                let body = file_body(job.local)?;
                client
                    .put_to::<T, _>(&job.dest, body, job.size, job.overwrite, job.mode, job.mtime)
                    .await
            })
            .await?;
        return Ok(Uploaded {
            entry,
            instant: false,
            resumed_chunks: 0,
        });
    }
    let (entry, resumed) = chunked::<T>(client, job, policy).await?;
    Ok(Uploaded {
        entry,
        instant: false,
        resumed_chunks: resumed,
    })
}

/// The upload of a large file, its chunks sent while it is hashed (see the module docs).
async fn upload_while_hashing(
    client: &Client,
    local: &Path,
    remote: &str,
    overwrite: bool,
    parallel: usize,
    label: &str,
) -> Result<Uploaded> {
    let size = std::fs::metadata(local)?.len();
    let progress = Progress::new(label, size);
    let policy = Retry::reporting(Some(progress.clone()));
    let dest = UploadDest::Path(remote.to_string());
    let record = ResumeRecord::new(client, local, remote, overwrite)?;
    let known = match record.as_ref().and_then(ResumeRecord::load) {
        Some(id) => match policy
            .run("looking up the interrupted upload", || client.upload_status(&id))
            .await
        {
            Ok(s) => Some(s),
            Err(e) if e.status() == Some(404) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let session = match known {
        Some(s) => s,
        None => {
            let s = policy
                .run("starting the upload", || {
                    client.upload_init_to(&dest, None, size, overwrite)
                })
                .await?;
            if let Some(r) = &record {
                r.save(&s.id)?;
            }
            s
        }
    };
    let mut hashing = std::pin::pin!(sha1_file(local, None));
    let mut parts = std::pin::pin!(send_parts(client, local, size, &session, parallel, &policy));
    let (sha1, sent) = tokio::select! {
        h = &mut hashing => (h?, None),
        r = &mut parts => (hashing.await?, Some(r?)),
    };
    let job = UploadJob::to_path(local, remote, &sha1, size, overwrite, parallel);
    // Still sending: the server may have the content already.
    if sent.is_none() {
        if let Some(entry) = try_instant::<RemoteEntry>(client, &job, &policy).await? {
            // Best effort: an abandoned session expires and is swept anyway.
            let _ = client.upload_cancel(&session.id).await;
            if let Some(r) = &record {
                r.remove();
            }
            progress.set(size);
            progress.finish("already on the server: linked, the chunks sent meanwhile dropped");
            return Ok(Uploaded {
                entry,
                instant: true,
                resumed_chunks: 0,
            });
        }
    }
    let resumed = match sent {
        Some(n) => n,
        None => parts.await?,
    };
    let entry = policy
        .run("completing the upload", || {
            client.upload_complete_as::<RemoteEntry>(&session.id, Some(&sha1))
        })
        .await;
    if let Some(r) = &record {
        // A refused upload (the file changed while it was sent) is discarded by the
        // server: nothing to resume either.
        if entry.is_ok() || entry.as_ref().err().and_then(ClientError::status) == Some(422) {
            r.remove();
        }
    }
    let entry = entry?;
    progress.set(size);
    progress.finish("uploaded");
    Ok(Uploaded {
        entry,
        instant: false,
        resumed_chunks: resumed,
    })
}

/// Where the client remembers the session of an upload whose SHA-1 is declared at
/// completion: `<config dir>/uploads/<key>`, the key a hash of the server, the local
/// file (path, inode, size, mtime) and the destination. A changed file gets a new session.
pub struct ResumeRecord {
    path: PathBuf,
}

impl ResumeRecord {
    /// `None` when there is no config dir (the upload then cannot resume after a crash).
    fn new(client: &Client, local: &Path, remote: &str, overwrite: bool) -> Result<Option<ResumeRecord>> {
        use std::os::unix::fs::MetadataExt;
        let Some(dir) = super::credentials::config_dir() else {
            return Ok(None);
        };
        let meta = std::fs::metadata(local)?;
        let abs = std::fs::canonicalize(local)?;
        let mut h = sha1::Sha1::new();
        for part in [
            client.base().as_bytes(),
            abs.as_os_str().as_encoded_bytes(),
            remote.as_bytes(),
            &[u8::from(overwrite)],
            &meta.len().to_le_bytes(),
            &meta.mtime().to_le_bytes(),
            &meta.mtime_nsec().to_le_bytes(),
            &meta.ino().to_le_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Ok(Some(ResumeRecord {
            path: dir.join("uploads").join(hex::encode(h.finalize())),
        }))
    }

    fn load(&self) -> Option<String> {
        let id = std::fs::read_to_string(&self.path).ok()?;
        let id = id.trim();
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    }

    fn save(&self, id: &str) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.path.parent().expect("record in a dir");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::write(&self.path, id)
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A resumable chunked upload; returns the entry and how many chunks the server already
/// had.
pub async fn chunked<T: DeserializeOwned>(client: &Client, job: &UploadJob<'_>, policy: &Retry) -> Result<(T, u64)> {
    let session = policy
        .run("starting the upload", || {
            client.upload_init_to(&job.dest, Some(job.sha1), job.size, job.overwrite)
        })
        .await?;
    let resumed = send_parts(client, job.local, job.size, &session, job.parallel, policy).await?;
    let entry = policy
        .run("completing the upload", || {
            client.upload_complete_as::<T>(&session.id, None)
        })
        .await?;
    Ok((entry, resumed))
}

/// Sends the chunks of `session` the server does not have, `parallel` at a time; returns
/// how many it had.
async fn send_parts(
    client: &Client,
    local: &Path,
    size: u64,
    session: &super::api::RemoteUpload,
    parallel: usize,
    policy: &Retry,
) -> Result<u64> {
    let progress = policy.progress.as_ref();
    let chunk = session.chunk_size;
    let have: std::collections::HashSet<u64> = session.received.iter().copied().collect();
    let resumed = have.len() as u64;
    if resumed > 0 {
        if let Some(p) = progress {
            p.note(&format!(
                "resuming: the server has {resumed} of {} chunks",
                session.chunk_count
            ));
        }
    }
    let len_of = |i: u64| {
        if i < session.chunk_count {
            chunk
        } else {
            size - (session.chunk_count - 1) * chunk
        }
    };
    if let Some(p) = progress {
        p.set(have.iter().map(|i| len_of(*i)).sum());
    }
    let missing: Vec<u64> = (1..=session.chunk_count).filter(|i| !have.contains(i)).collect();
    let id = session.id.clone();
    futures_util::stream::iter(missing)
        .map(|index| {
            let (id, local) = (id.clone(), local.to_path_buf());
            async move {
                let offset = (index - 1) * chunk;
                let len = len_of(index);
                let data = tokio::task::spawn_blocking(move || read_range(&local, offset, len))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))??;
                // No per-chunk SHA-1: `complete` checks the whole file against its SHA-1,
                // and hashing every chunk again would cost the client a second full pass
                // (about a third of the upload's time on a fast link).
                let data = Bytes::from(data);
                policy
                    .run("sending a chunk", || client.upload_part(&id, index, data.clone()))
                    .await?;
                if let Some(p) = progress {
                    p.add(len);
                }
                Ok::<(), ClientError>(())
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(resumed)
}

/// Downloads `remote` to `local`, resuming a previous attempt, and checks the SHA-1.
pub async fn download(client: &Client, remote: &str, local: &Path) -> Result<RemoteEntry> {
    let entry = retry("looking up the file", None, || client.stat(remote)).await?;
    if entry.is_dir() {
        return Err(ClientError::Api {
            status: 409,
            code: "is_a_directory".into(),
            message: format!("{remote} is a directory"),
        });
    }
    let sha1 = entry.sha1.clone().unwrap_or_default();
    let etag = format!("\"{sha1}\"");
    let part = part_path(local);
    let progress = Progress::new(&entry.name, entry.size as u64);
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match fetch_into(client, remote, &etag, &part, entry.size as u64, &progress).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && started.elapsed() < RETRY_FOR => {
                progress.note(&format!("{e}; resuming"));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
    let got = sha1_file(&part, None).await?;
    if got != sha1 {
        let _ = std::fs::remove_file(&part);
        return Err(ClientError::Protocol(format!(
            "downloaded bytes hash to {got}, expected {sha1}; discarded"
        )));
    }
    std::fs::rename(&part, local)?;
    progress.finish("downloaded, SHA-1 verified");
    Ok(entry)
}

fn part_path(local: &Path) -> PathBuf {
    let mut name = local.file_name().unwrap_or_default().to_os_string();
    name.push(".filestore-part");
    local.with_file_name(name)
}

/// Appends what is missing of `remote` to `part`.
async fn fetch_into(
    client: &Client,
    remote: &str,
    etag: &str,
    part: &Path,
    size: u64,
    progress: &Progress,
) -> Result<()> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have == size && size > 0 {
        return Ok(()); // fully fetched before; the hash check decides
    }
    // A longer part file is not ours to append to: start over.
    let have = if have > size { 0 } else { have };
    let resp = client.get(remote, have, Some(etag)).await?;
    let resumed = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(part)?;
    progress.set(if resumed { have } else { 0 });
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        file.write_all(&chunk)?;
        progress.add(chunk.len() as u64);
    }
    file.sync_all()?;
    Ok(())
}
