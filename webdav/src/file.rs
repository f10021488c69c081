//! Open files: GET reads through [`ReadFile`], PUT writes through [`WriteFile`].
//!
//! dav-server drives a PUT as `open`, many `write_bytes`, one `flush`. The port wants
//! one call with a body stream instead, so [`WriteFile`] starts [`DavPort::upload`] on
//! a spawned task at open and feeds it through a small bounded channel: memory stays
//! at a few chunks whatever the size of the PUT, and a slow store slows the client
//! down (back-pressure) instead of buffering. `flush` is the commit point: it sends
//! the end marker and waits for the port's answer. A file dropped without `flush`
//! (client gone, body error, length mismatch) ends the stream with an error, so the
//! port stores nothing.
//!
//! A PUT that announces a small body (`Content-Length` of at most [`SMALL_PUT`]) is
//! gathered in memory instead, and `flush` hands it to the port whole, on the request's
//! own task: for a body of a few KiB, the spawned task and its channel cost more than the
//! bytes (most small files are stored in their metadata row, with no disk writes at all).

use std::fmt;
use std::io::{self, SeekFrom};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::PortError;
use crate::meta::EntryMeta;
use crate::port::{DavPort, Entry, EntryId, ReadBody, UploadBody, UploadOptions};

/// Chunks in flight between the request body and the port. With hyper's frames of at
/// most a few hundred KiB this bounds a PUT's memory to a few MiB.
const UPLOAD_CHANNEL_CHUNKS: usize = 8;

/// Announced bodies up to this size are gathered in memory (see the module doc).
pub const SMALL_PUT: u64 = 64 << 10;

/// A file opened for reading. The port's read stream is opened lazily at the current
/// position and kept while reads are sequential; a seek drops it.
pub(crate) struct ReadFile {
    port: Arc<dyn DavPort>,
    entry: Entry,
    pos: u64,
    /// `DavFile` must be `Sync` but a boxed stream is not; the mutex is never
    /// contended (`get_mut` with `&mut self`), it only makes the type `Sync`.
    stream: Mutex<Option<ReadBody>>,
    /// Rest of a chunk that was larger than the caller asked for.
    pending: Bytes,
}

impl fmt::Debug for ReadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadFile")
            .field("id", &self.entry.id)
            .field("pos", &self.pos)
            .finish()
    }
}

impl ReadFile {
    pub(crate) fn new(port: Arc<dyn DavPort>, entry: Entry) -> Self {
        Self {
            port,
            entry,
            pos: 0,
            stream: Mutex::new(None),
            pending: Bytes::new(),
        }
    }

    fn size(&self) -> u64 {
        u64::try_from(self.entry.size).unwrap_or(0)
    }

    async fn read_inner(&mut self, count: usize) -> Result<Bytes, FsError> {
        let size = self.size();
        if self.pos >= size || count == 0 {
            return Ok(Bytes::new());
        }
        if self.pending.is_empty() {
            let slot = self.stream.get_mut().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(self.port.read(&self.entry, self.pos, size - self.pos).await?);
            }
            let Some(stream) = slot.as_mut() else {
                return Err(FsError::GeneralFailure);
            };
            self.pending = match stream.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => return Err(e.into()),
                None => {
                    // The content is shorter than the entry says: better to cut the
                    // response than to send made-up bytes under a valid ETag.
                    tracing::error!(id = self.entry.id, pos = self.pos, "content ended early");
                    return Err(FsError::GeneralFailure);
                }
            };
        }
        let n = count.min(self.pending.len());
        let out = self.pending.split_to(n);
        self.pos += n as u64;
        Ok(out)
    }
}

impl DavFile for ReadFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(EntryMeta(self.entry.clone()));
        futures_util::future::ready(Ok(meta)).boxed()
    }

    fn write_buf(&mut self, _buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        futures_util::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        futures_util::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        self.read_inner(count).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let size = self.size();
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let res = match target {
            Some(n) => {
                if n != self.pos {
                    *self.stream.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
                    self.pending = Bytes::new();
                    self.pos = n;
                }
                Ok(n)
            }
            None => Err(FsError::GeneralFailure),
        };
        futures_util::future::ready(res).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// What travels from [`WriteFile`] to the upload task.
enum Msg {
    Data(Bytes),
    /// The body ended normally; anything else closing the channel is an abort.
    End,
}

/// Turns the channel into the port's body stream: data, then the end of the stream
/// after [`Msg::End`], or an error if the sender went away without it.
fn channel_body(rx: mpsc::Receiver<Msg>) -> UploadBody {
    futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Data(b)) => Some((Ok(b), Some(rx))),
            Some(Msg::End) => None,
            None => Some((
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "upload aborted")),
                None,
            )),
        }
    })
    .boxed()
}

enum WriteState {
    Streaming {
        tx: mpsc::Sender<Msg>,
        task: JoinHandle<Result<Entry, PortError>>,
    },
    /// A small body, gathered until `flush` uploads it.
    Gathering(Box<Gathered>),
    Done(Entry),
    Failed(FsError),
}

/// A small body and where it goes.
struct Gathered {
    port: Arc<dyn DavPort>,
    parent: EntryId,
    name: String,
    options: UploadOptions,
    chunks: Vec<Bytes>,
}

/// A file opened for writing by PUT (see the module doc).
pub(crate) struct WriteFile {
    state: WriteState,
    expected: Option<u64>,
    written: u64,
    /// What `metadata` shows before the upload is committed.
    placeholder: Entry,
}

impl fmt::Debug for WriteFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteFile").field("written", &self.written).finish()
    }
}

impl WriteFile {
    /// Starts the upload task. Needs a Tokio runtime (the server's).
    pub(crate) fn start(
        port: Arc<dyn DavPort>,
        parent: EntryId,
        name: String,
        options: UploadOptions,
        placeholder: Entry,
    ) -> Self {
        if options.expected_len.is_some_and(|n| n <= SMALL_PUT) {
            let gathered = Gathered {
                port,
                parent,
                name,
                options,
                chunks: Vec::new(),
            };
            return Self {
                state: WriteState::Gathering(Box::new(gathered)),
                expected: options.expected_len,
                written: 0,
                placeholder,
            };
        }
        let (tx, rx) = mpsc::channel(UPLOAD_CHANNEL_CHUNKS);
        let span = tracing::debug_span!("upload", parent, name = %name);
        let task =
            tokio::spawn(async move { port.upload(parent, &name, channel_body(rx), options).await }.instrument(span));
        Self {
            state: WriteState::Streaming { tx, task },
            expected: options.expected_len,
            written: 0,
            placeholder,
        }
    }

    /// A file that was created before open returned (LOCK on an unmapped URL).
    pub(crate) fn done(entry: Entry) -> Self {
        Self {
            placeholder: entry.clone(),
            state: WriteState::Done(entry),
            expected: None,
            written: 0,
        }
    }

    /// The upload ended early or failed: take the port's reason.
    async fn fail(&mut self) -> FsError {
        let state = std::mem::replace(&mut self.state, WriteState::Failed(FsError::GeneralFailure));
        let err = match state {
            WriteState::Streaming { tx, task } => {
                drop(tx);
                match task.await {
                    Ok(Err(e)) => e.into(),
                    Ok(Ok(entry)) => {
                        tracing::error!(id = entry.id, "port finished the upload before its end");
                        FsError::GeneralFailure
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "upload task failed");
                        FsError::GeneralFailure
                    }
                }
            }
            WriteState::Failed(e) => e,
            WriteState::Gathering(_) | WriteState::Done(_) => FsError::GeneralFailure,
        };
        self.state = WriteState::Failed(err);
        err
    }

    async fn write_inner(&mut self, data: Bytes) -> Result<(), FsError> {
        if data.is_empty() {
            return Ok(());
        }
        self.written += data.len() as u64;
        if self.expected.is_some_and(|n| self.written > n) {
            // More than Content-Length: refuse to let the port see a valid end.
            self.abort();
            return Err(FsError::GeneralFailure);
        }
        let sent = match &mut self.state {
            WriteState::Streaming { tx, .. } => tx.send(Msg::Data(data)).await.is_ok(),
            // Bounded by the announced length, checked above.
            WriteState::Gathering(g) => {
                g.chunks.push(data);
                true
            }
            WriteState::Failed(e) => return Err(*e),
            WriteState::Done(_) => return Err(FsError::GeneralFailure),
        };
        if sent {
            Ok(())
        } else {
            Err(self.fail().await)
        }
    }

    async fn flush_inner(&mut self) -> Result<(), FsError> {
        if self.expected.is_some_and(|n| self.written != n) {
            tracing::debug!(written = self.written, expected = ?self.expected, "body length mismatch");
            self.abort();
            return Err(FsError::GeneralFailure);
        }
        let state = std::mem::replace(&mut self.state, WriteState::Failed(FsError::GeneralFailure));
        match state {
            WriteState::Gathering(g) => {
                let Gathered {
                    port,
                    parent,
                    name,
                    options,
                    chunks,
                } = *g;
                let body = futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed();
                let span = tracing::debug_span!("upload", parent, name = %name);
                match port.upload(parent, &name, body, options).instrument(span).await {
                    Ok(entry) => {
                        self.state = WriteState::Done(entry);
                        Ok(())
                    }
                    Err(e) => {
                        let e = e.into();
                        self.state = WriteState::Failed(e);
                        Err(e)
                    }
                }
            }
            WriteState::Streaming { tx, task } => {
                if tx.send(Msg::End).await.is_err() {
                    self.state = WriteState::Streaming { tx, task };
                    return Err(self.fail().await);
                }
                drop(tx);
                match task.await {
                    Ok(Ok(entry)) => {
                        self.state = WriteState::Done(entry);
                        Ok(())
                    }
                    Ok(Err(e)) => {
                        let e = e.into();
                        self.state = WriteState::Failed(e);
                        Err(e)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "upload task failed");
                        Err(FsError::GeneralFailure)
                    }
                }
            }
            WriteState::Done(entry) => {
                self.state = WriteState::Done(entry);
                Ok(())
            }
            WriteState::Failed(e) => {
                self.state = WriteState::Failed(e);
                Err(e)
            }
        }
    }

    /// Drops the sender without the end marker: the port sees an error and stores
    /// nothing. The task finishes by itself.
    fn abort(&mut self) {
        self.state = WriteState::Failed(FsError::GeneralFailure);
    }
}

impl DavFile for WriteFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let entry = match &self.state {
            WriteState::Done(e) => e.clone(),
            _ => self.placeholder.clone(),
        };
        let meta: Box<dyn DavMetaData> = Box::new(EntryMeta(entry));
        futures_util::future::ready(Ok(meta)).boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let data = buf.copy_to_bytes(buf.remaining());
        self.write_inner(data).boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        self.write_inner(buf).boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        futures_util::future::ready(Err(FsError::Forbidden)).boxed()
    }

    /// Only partial PUTs (`Content-Range`) seek; the port stores whole files.
    fn seek(&mut self, _pos: SeekFrom) -> FsFuture<'_, u64> {
        futures_util::future::ready(Err(FsError::NotImplemented)).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        self.flush_inner().boxed()
    }
}
