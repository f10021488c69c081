//! A 1 GiB PUT goes through with a bounded number of chunks in flight: the adapter
//! never holds the body, and a slow port slows the client down.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::Harness;
use filestore_webdav::memory::MemoryPort;
use filestore_webdav::{
    DavPort, DeadProp, Entry, EntryId, Millis, Overwrite, PortError, PropPatch, Quota, ReadBody, UploadBody,
    UploadOptions,
};
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::StreamBody;

/// Decorator over [`MemoryPort`] whose upload consumes the body without keeping it,
/// and records how far the client got ahead of it.
struct SinkPort {
    inner: MemoryPort,
    produced: Arc<AtomicU64>,
    received: AtomicU64,
    max_ahead: AtomicU64,
}

#[async_trait]
impl DavPort for SinkPort {
    fn root_id(&self) -> EntryId {
        self.inner.root_id()
    }
    async fn get(&self, id: EntryId) -> Result<Entry, PortError> {
        self.inner.get(id).await
    }
    async fn lookup(&self, parent: EntryId, name: &str) -> Result<Option<Entry>, PortError> {
        self.inner.lookup(parent, name).await
    }
    async fn list(&self, dir: EntryId, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, PortError> {
        self.inner.list(dir, after, limit).await
    }
    async fn mkdir(&self, parent: EntryId, name: &str) -> Result<Entry, PortError> {
        self.inner.mkdir(parent, name).await
    }
    async fn upload(
        &self,
        parent: EntryId,
        name: &str,
        mut body: UploadBody,
        _options: UploadOptions,
    ) -> Result<Entry, PortError> {
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            total += chunk.map_err(PortError::other)?.len() as u64;
            let received = self.received.fetch_add(1, Ordering::SeqCst) + 1;
            let ahead = self.produced.load(Ordering::SeqCst).saturating_sub(received);
            self.max_ahead.fetch_max(ahead, Ordering::SeqCst);
            // Give the client every chance to run ahead if nothing held it back.
            tokio::task::yield_now().await;
        }
        self.inner.insert_file(parent, name, total.to_string().as_bytes())
    }
    async fn read(&self, entry: &Entry, offset: u64, len: u64) -> Result<ReadBody, PortError> {
        self.inner.read(entry, offset, len).await
    }
    async fn rename(&self, id: EntryId, p: EntryId, n: &str, o: Overwrite) -> Result<Entry, PortError> {
        self.inner.rename(id, p, n, o).await
    }
    async fn copy(&self, id: EntryId, p: EntryId, n: &str, o: Overwrite) -> Result<Entry, PortError> {
        self.inner.copy(id, p, n, o).await
    }
    async fn delete(&self, id: EntryId, recursive: bool) -> Result<(), PortError> {
        self.inner.delete(id, recursive).await
    }
    async fn set_attrs(&self, id: EntryId, mode: Option<u32>, mtime: Option<Millis>) -> Result<Entry, PortError> {
        self.inner.set_attrs(id, mode, mtime).await
    }
    async fn get_props(&self, id: EntryId) -> Result<Vec<DeadProp>, PortError> {
        self.inner.get_props(id).await
    }
    async fn patch_props(&self, id: EntryId, patch: Vec<PropPatch>) -> Result<(), PortError> {
        self.inner.patch_props(id, patch).await
    }
    async fn quota(&self) -> Result<Quota, PortError> {
        self.inner.quota().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_put_keeps_a_bounded_number_of_chunks_in_flight() {
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: u64 = 4096; // 1 GiB
    let produced = Arc::new(AtomicU64::new(0));
    let sink = Arc::new(SinkPort {
        inner: MemoryPort::new(),
        produced: produced.clone(),
        received: AtomicU64::new(0),
        max_ahead: AtomicU64::new(0),
    });
    // One buffer shared by every chunk: the test itself stays small.
    let block = Bytes::from(vec![7u8; CHUNK]);
    let counter = produced.clone();
    let frames = futures_util::stream::iter(0..CHUNKS).map(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(http_body::Frame::data(block.clone()))
    });
    let req = Request::builder()
        .method("PUT")
        .uri("/dav/huge.bin")
        .header("content-length", (CHUNK as u64 * CHUNKS).to_string())
        .body(StreamBody::new(frames))
        .expect("request");

    let h = Harness::new();
    let res = h
        .webdav
        .handle(
            req,
            filestore_webdav::DavUser {
                principal: "p".into(),
                port: sink.clone(),
                locks: h.locks_for("p"),
            },
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(sink.received.load(Ordering::SeqCst), CHUNKS);
    let ahead = sink.max_ahead.load(Ordering::SeqCst);
    // Channel capacity (8) plus the chunk each side holds.
    assert!(ahead <= 12, "client got {ahead} chunks ahead of the port");
    let e = sink.inner.lookup(sink.root_id(), "huge.bin").await.unwrap().unwrap();
    assert_eq!(
        &sink.inner.content(e.id).unwrap()[..],
        (CHUNK as u64 * CHUNKS).to_string().as_bytes()
    );
}
