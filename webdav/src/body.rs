//! The response body type: dav-server's body for what dav-server answers, and our own
//! for the answers this crate writes itself (GET of a file, PROPFIND).
//!
//! dav-server's `Body` can only stream through its own private generator type, so the
//! fast paths (`get`, `propfind`) need a body of their own: a whole buffer, or a stream
//! of chunks.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Frame, SizeHint};

/// A stream of body chunks.
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// Response body: streams (GET content, PROPFIND multistatus) without buffering.
/// Implements `http_body::Body<Data = Bytes, Error = io::Error>`.
pub struct DavBody(Inner);

enum Inner {
    /// Whatever dav-server answered.
    Dav(dav_server::body::Body),
    /// One buffer (taken when sent).
    Full(Option<Bytes>),
    /// Chunks as they come.
    Stream(ChunkStream),
}

impl DavBody {
    /// No body. Any `Content-Length` header set on the response stays as it is (HEAD).
    pub fn empty() -> Self {
        DavBody(Inner::Dav(dav_server::body::Body::empty()))
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        DavBody(Inner::Full(Some(bytes)))
    }

    pub(crate) fn stream(s: ChunkStream) -> Self {
        DavBody(Inner::Stream(s))
    }
}

impl From<dav_server::body::Body> for DavBody {
    fn from(b: dav_server::body::Body) -> Self {
        DavBody(Inner::Dav(b))
    }
}

impl From<&'static str> for DavBody {
    fn from(s: &'static str) -> Self {
        DavBody::full(Bytes::from_static(s.as_bytes()))
    }
}

impl http_body::Body for DavBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        // Every variant is Unpin (dav-server's body included: its own `poll_next` needs it).
        match &mut self.get_mut().0 {
            Inner::Dav(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s) => s.as_mut().poll_next(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Inner::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
