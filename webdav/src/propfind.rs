//! PROPFIND Depth 0 and 1 for the common requests, answered without dav-server.
//!
//! dav-server builds every property of every entry as an XML element tree, puts them in a
//! hash map per status and writes them through an XML event writer, and asks the lock
//! system about each entry. For a directory of 2,000 entries that was about half of
//! the request's CPU. Here the multistatus is written as text straight from the entry
//! rows: one [`DavPort::list`] call for the listing (pages of [`PAGE`]) and one
//! dead-property call for the directory and its children.
//!
//! Handled: an empty body or `<allprop/>` (without `<include>`), and `<prop>` with the
//! live properties below and dead properties. Everything else returns `None` from
//! [`parse`] and goes to dav-server: `<propname/>`, `<include>`, quota and principal
//! properties, Microsoft's `Win32*` properties (and `allprop` from Microsoft clients,
//! which dav-server answers with them), and any entry covered by a lock (dav-server
//! writes the `lockdiscovery`).
//!
//! The output has the properties dav-server gives, with the same text (hrefs
//! percent-encoded the same way, collections with a trailing `/`, `getlastmodified` in
//! RFC 1123, `creationdate` in RFC 3339, quoted `getetag`, `getcontenttype` from the
//! extension), plus what RFC 4918 9.1 asks and dav-server leaves out: a `404` propstat
//! naming each requested property the entry does not have. The unit test at the end
//! compares the two answers for the same tree.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::ls::DavLockSystem;
use http::{header, HeaderValue, Response, StatusCode};
use xmltree::{Element, XMLNode};

use crate::body::DavBody;
use crate::error::PortError;
use crate::meta::to_system_time;
use crate::port::{DavPort, DeadProp, Entry, EntryId};

/// Children fetched per listing call: a directory of up to this many entries is listed
/// in one query.
pub(crate) const PAGE: usize = 10_000;

/// Size of the chunks the multistatus is sent in.
const CHUNK: usize = 64 * 1024;

const NS_DAV: &str = "DAV:";
const NS_APACHE: &str = "http://apache.org/dav/props/";
const NS_MS: &str = "urn:schemas-microsoft-com:";

/// A live property this module writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Live {
    CreationDate,
    ContentLength,
    ContentType,
    ETag,
    LastModified,
    LockDiscovery,
    ResourceType,
    SupportedLock,
    Executable,
}

/// What `allprop` returns besides the dead properties, in dav-server's order.
const ALLPROP: [Live; 8] = [
    Live::CreationDate,
    Live::ContentLength,
    Live::ContentType,
    Live::ETag,
    Live::LastModified,
    Live::LockDiscovery,
    Live::ResourceType,
    Live::SupportedLock,
];

/// One property named in a `<prop>` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    Live(Live),
    /// Looked up among the dead properties (`displayname`, `getcontentlanguage` and
    /// every property outside the DAV:, Apache and Microsoft namespaces).
    Dead {
        ns: Option<String>,
        name: String,
    },
    /// A DAV: property nobody has: always 404.
    Missing {
        name: String,
    },
}

/// A PROPFIND this module answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    AllProp,
    Prop(Vec<Wanted>),
}

impl Request {
    fn needs_dead_props(&self) -> bool {
        match self {
            Request::AllProp => true,
            Request::Prop(w) => w.iter().any(|w| matches!(w, Wanted::Dead { .. })),
        }
    }

    fn needs_lock_check(&self) -> bool {
        match self {
            Request::AllProp => true,
            Request::Prop(w) => w.contains(&Wanted::Live(Live::LockDiscovery)),
        }
    }

    fn uses_apache_ns(&self) -> bool {
        matches!(self, Request::Prop(w) if w.contains(&Wanted::Live(Live::Executable)))
    }
}

/// The request body, if this module handles it (see the module doc).
pub(crate) fn parse(body: &[u8], user_agent: &str) -> Option<Request> {
    if body.is_empty() {
        // dav-server answers Microsoft clients' allprop with the Win32 properties.
        return (!user_agent.contains("Microsoft")).then_some(Request::AllProp);
    }
    let root = Element::parse(body).ok()?;
    if root.name != "propfind" || root.namespace.as_deref() != Some(NS_DAV) {
        return None;
    }
    let mut has_include = false;
    let mut kind = None;
    for child in root.children.iter().filter_map(XMLNode::as_element) {
        match child.name.as_str() {
            // dav-server matches these by local name only; so do we.
            "include" => has_include = true,
            "propname" | "prop" | "allprop" if kind.is_none() => kind = Some(child),
            _ => {}
        }
    }
    let kind = kind?;
    match kind.name.as_str() {
        "allprop" if !has_include && !user_agent.contains("Microsoft") => Some(Request::AllProp),
        "prop" => {
            let mut wanted = Vec::new();
            for p in kind.children.iter().filter_map(XMLNode::as_element) {
                wanted.push(classify(p)?);
            }
            Some(Request::Prop(wanted))
        }
        _ => None,
    }
}

/// What a requested property is, or `None` if dav-server must answer.
fn classify(p: &Element) -> Option<Wanted> {
    let dead = || Wanted::Dead {
        ns: p.namespace.clone(),
        name: p.name.clone(),
    };
    match p.namespace.as_deref() {
        Some(NS_DAV) => Some(match p.name.as_str() {
            "creationdate" => Wanted::Live(Live::CreationDate),
            "getcontentlength" => Wanted::Live(Live::ContentLength),
            "getcontenttype" => Wanted::Live(Live::ContentType),
            "getetag" => Wanted::Live(Live::ETag),
            "getlastmodified" => Wanted::Live(Live::LastModified),
            "lockdiscovery" => Wanted::Live(Live::LockDiscovery),
            "resourcetype" => Wanted::Live(Live::ResourceType),
            "supportedlock" => Wanted::Live(Live::SupportedLock),
            "displayname" | "getcontentlanguage" => dead(),
            // These need the quota or the principal: dav-server's.
            "quota-available-bytes" | "quota-used-bytes" | "current-user-principal" => return None,
            other => Wanted::Missing { name: other.to_owned() },
        }),
        Some(NS_APACHE) => (p.name == "executable").then_some(Wanted::Live(Live::Executable)),
        Some(NS_MS) => None,
        _ => Some(dead()),
    }
}

/// Why the fast path gave up before writing anything: the caller lets dav-server answer.
#[derive(Debug)]
pub(crate) enum Decline {
    /// Not found, locked, or otherwise dav-server's business.
    ToDavServer,
    /// The port failed.
    Port(PortError),
}

impl From<PortError> for Decline {
    fn from(e: PortError) -> Self {
        Decline::Port(e)
    }
}

/// Answers a PROPFIND on `path` (the request's, parsed by dav-server's rules) with
/// `depth` 0 or 1.
pub(crate) async fn answer(
    port: &Arc<dyn DavPort>,
    locks: &dyn DavLockSystem,
    prefix: &str,
    mut path: DavPath,
    depth_one: bool,
    req: Request,
) -> Result<Response<DavBody>, Decline> {
    let mut names = Vec::new();
    for seg in path.as_bytes().split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        names.push(std::str::from_utf8(seg).map_err(|_| Decline::ToDavServer)?);
    }
    let Some(target) = port.resolve(port.root_id(), &names).await? else {
        return Err(Decline::ToDavServer);
    };
    let mut content_location = None;
    if target.is_dir() && !path.is_collection() {
        let mut p =
            DavPath::new(&format!("{}/", path.with_prefix().as_url_string())).map_err(|_| Decline::ToDavServer)?;
        p.set_prefix(prefix).map_err(|_| Decline::ToDavServer)?;
        path = p;
        content_location = Some(path.with_prefix().as_url_string());
    }
    // With no lock on the target, above it (deep) or below it, every lockdiscovery is
    // empty; otherwise dav-server writes them.
    if req.needs_lock_check() && locks.check(&path, None, false, depth_one, &[]).await.is_err() {
        return Err(Decline::ToDavServer);
    }
    let href = path.with_prefix().as_url_string();
    let list = depth_one && target.is_dir();

    let first = if list {
        port.list(target.id, None, PAGE).await?
    } else {
        Vec::new()
    };
    let complete = first.len() < PAGE;
    let mut props = Vec::new();
    if req.needs_dead_props() {
        props = if list && complete {
            port.get_props_dir(target.id).await?
        } else {
            let mut ids: Vec<EntryId> = first.iter().map(|e| e.id).collect();
            ids.push(target.id);
            port.get_props_many(&ids).await?
        };
    }
    let props = PropIndex::new(props);

    let mut w = Writer::new(&req, &href);
    w.response(&href, &target, props.of(target.id));
    let mut res = Response::new(DavBody::empty());
    *res.status_mut() = StatusCode::MULTI_STATUS;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(loc) = content_location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::CONTENT_LOCATION, loc);
    }

    if !list || (complete && first.len() * 600 <= CHUNK * 4) {
        // Small answers go in one buffer.
        for e in &first {
            w.child(e, props.of(e.id));
        }
        w.end();
        *res.body_mut() = DavBody::full(Bytes::from(w.buf));
        return Ok(res);
    }

    let state = Stream {
        port: port.clone(),
        dir: target.id,
        writer: w,
        page: first.into_iter(),
        props,
        more: !complete,
        with_props: req.needs_dead_props(),
        done: false,
    };
    let s = futures_util::stream::unfold(state, |mut st| async move {
        let chunk = st.next_chunk().await?;
        Some((chunk, st))
    });
    *res.body_mut() = DavBody::stream(Box::pin(s));
    Ok(res)
}

/// Dead properties by entry id.
struct PropIndex(std::collections::HashMap<EntryId, Vec<DeadProp>>);

impl PropIndex {
    fn new(rows: Vec<(EntryId, Vec<DeadProp>)>) -> Self {
        PropIndex(rows.into_iter().collect())
    }

    fn of(&self, id: EntryId) -> &[DeadProp] {
        self.0.get(&id).map_or(&[], Vec::as_slice)
    }
}

/// The rest of a depth-1 answer, written chunk by chunk as the client reads.
struct Stream {
    port: Arc<dyn DavPort>,
    dir: EntryId,
    writer: Writer,
    page: std::vec::IntoIter<Entry>,
    props: PropIndex,
    /// The last page was full: there may be more.
    more: bool,
    with_props: bool,
    done: bool,
}

impl Stream {
    async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            if self.writer.buf.len() >= CHUNK {
                return Some(Ok(Bytes::from(std::mem::take(&mut self.writer.buf))));
            }
            if let Some(e) = self.page.next() {
                self.writer.child(&e, self.props.of(e.id));
                if self.page.len() == 0 {
                    // Keep the last name: the next page starts after it.
                    self.writer.last = Some(e.name);
                }
                continue;
            }
            if self.more {
                match self.next_page().await {
                    Ok(()) => continue,
                    Err(e) => {
                        // Headers are gone: all that is left is to cut the body short.
                        tracing::warn!(error = %e, "PROPFIND listing failed mid-answer");
                        self.done = true;
                        return Some(Err(std::io::Error::other(e.to_string())));
                    }
                }
            }
            self.writer.end();
            self.done = true;
            return Some(Ok(Bytes::from(std::mem::take(&mut self.writer.buf))));
        }
    }

    async fn next_page(&mut self) -> Result<(), PortError> {
        let after = self.writer.last.take();
        let page = self.port.list(self.dir, after.as_deref(), PAGE).await?;
        self.more = page.len() == PAGE;
        if self.with_props && !page.is_empty() {
            let ids: Vec<EntryId> = page.iter().map(|e| e.id).collect();
            self.props = PropIndex::new(self.port.get_props_many(&ids).await?);
        }
        self.page = page.into_iter();
        Ok(())
    }
}

/// Percent-encodes like dav-server's hrefs: everything but unreserved characters.
const HREF_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Writes the multistatus text.
struct Writer {
    buf: Vec<u8>,
    req: Request,
    /// Href of the target collection, ending in '/': children's hrefs extend it.
    base: String,
    /// Name of the last child written (where the next page starts).
    last: Option<String>,
    /// Reused for each entry's 404 list.
    missing: Vec<u8>,
}

impl Writer {
    fn new(req: &Request, href: &str) -> Self {
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        buf.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"utf-8\"?><D:multistatus xmlns:D=\"DAV:\"");
        if req.uses_apache_ns() {
            buf.extend_from_slice(b" xmlns:A=\"http://apache.org/dav/props/\"");
        }
        buf.push(b'>');
        let mut base = href.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        Writer {
            buf,
            req: req.clone(),
            base,
            last: None,
            missing: Vec::new(),
        }
    }

    fn end(&mut self) {
        self.buf.extend_from_slice(b"</D:multistatus>");
    }

    fn child(&mut self, e: &Entry, dead: &[DeadProp]) {
        let mut href = std::mem::take(&mut self.base);
        let len = href.len();
        href.extend(percent_encoding::utf8_percent_encode(&e.name, HREF_SET));
        if e.is_dir() {
            href.push('/');
        }
        self.response(&href, e, dead);
        href.truncate(len);
        self.base = href;
    }

    fn response(&mut self, href: &str, e: &Entry, dead: &[DeadProp]) {
        let b = &mut self.buf;
        b.extend_from_slice(b"<D:response><D:href>");
        escape_into(b, href);
        b.extend_from_slice(b"</D:href><D:propstat><D:prop>");
        let ok_start = b.len();
        self.missing.clear();
        match &self.req {
            Request::AllProp => {
                for live in ALLPROP {
                    live_prop(b, live, e);
                }
                for d in dead {
                    dead_prop(b, d);
                }
            }
            Request::Prop(wanted) => {
                for w in wanted {
                    match w {
                        Wanted::Live(Live::ContentLength) if e.is_dir() => {
                            self.missing.extend_from_slice(b"<D:getcontentlength/>");
                        }
                        Wanted::Live(live) => live_prop(b, *live, e),
                        Wanted::Dead { ns, name } => {
                            match dead.iter().find(|d| d.namespace == *ns && d.name == *name) {
                                Some(d) => dead_prop(b, d),
                                None => named_empty(&mut self.missing, ns.as_deref(), name),
                            }
                        }
                        Wanted::Missing { name } => named_empty(&mut self.missing, Some(NS_DAV), name),
                    }
                }
            }
        }
        if b.len() == ok_start {
            // Nothing found: no 200 propstat at all.
            b.truncate(ok_start - b"<D:propstat><D:prop>".len());
        } else {
            b.extend_from_slice(b"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
        }
        if !self.missing.is_empty() {
            b.extend_from_slice(b"<D:propstat><D:prop>");
            b.extend_from_slice(&self.missing);
            b.extend_from_slice(b"</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>");
        }
        b.extend_from_slice(b"</D:response>");
    }
}

fn live_prop(b: &mut Vec<u8>, live: Live, e: &Entry) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = match live {
        Live::CreationDate => write!(
            b,
            "<D:creationdate>{}</D:creationdate>",
            rfc3339(to_system_time(e.created))
        ),
        Live::ContentLength if e.is_dir() => Ok(()),
        Live::ContentLength => write!(b, "<D:getcontentlength>{}</D:getcontentlength>", e.size.max(0)),
        Live::ContentType => {
            let t = if e.is_dir() {
                "httpd/unix-directory"
            } else {
                mime_type(&e.name)
            };
            b.extend_from_slice(b"<D:getcontenttype>");
            escape_into(b, t);
            b.extend_from_slice(b"</D:getcontenttype>");
            Ok(())
        }
        Live::ETag => {
            b.extend_from_slice(b"<D:getetag>\"");
            escape_into(b, &crate::meta::etag(e));
            b.extend_from_slice(b"\"</D:getetag>");
            Ok(())
        }
        Live::LastModified => write!(
            b,
            "<D:getlastmodified>{}</D:getlastmodified>",
            httpdate::fmt_http_date(to_system_time(e.mtime))
        ),
        Live::LockDiscovery => {
            b.extend_from_slice(b"<D:lockdiscovery/>");
            Ok(())
        }
        Live::ResourceType => {
            b.extend_from_slice(if e.is_dir() {
                b"<D:resourcetype><D:collection/></D:resourcetype>"
            } else {
                b"<D:resourcetype/>"
            });
            Ok(())
        }
        Live::SupportedLock => {
            b.extend_from_slice(
                b"<D:supportedlock>\
                  <D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>\
                  <D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>\
                  </D:supportedlock>",
            );
            Ok(())
        }
        Live::Executable => write!(
            b,
            "<A:executable>{}</A:executable>",
            if !e.is_dir() && e.mode & 0o111 != 0 { "T" } else { "F" }
        ),
    };
}

/// A stored dead property: its element as it was set (it declares its own namespaces),
/// without an XML declaration.
fn dead_prop(b: &mut Vec<u8>, d: &DeadProp) {
    let mut xml = d.xml.as_slice();
    if xml.starts_with(b"<?xml") {
        match xml.windows(2).position(|w| w == b"?>") {
            Some(end) => xml = &xml[end + 2..],
            None => return,
        }
    }
    let xml = xml.trim_ascii();
    if xml.starts_with(b"<") && xml.ends_with(b">") {
        b.extend_from_slice(xml);
    } else {
        tracing::warn!(name = %d.name, "stored dead property is not an element: left out");
    }
}

/// `<X:name xmlns:X="ns"/>` (or `<name xmlns=""/>` outside any namespace), for a 404.
fn named_empty(b: &mut Vec<u8>, ns: Option<&str>, name: &str) {
    match ns {
        Some(NS_DAV) => {
            b.extend_from_slice(b"<D:");
            escape_into(b, name);
            b.extend_from_slice(b"/>");
        }
        Some(ns) => {
            b.extend_from_slice(b"<X:");
            escape_into(b, name);
            b.extend_from_slice(b" xmlns:X=\"");
            escape_into(b, ns);
            b.extend_from_slice(b"\"/>");
        }
        None => {
            b.push(b'<');
            escape_into(b, name);
            b.extend_from_slice(b" xmlns=\"\"/>");
        }
    }
}

/// XML text and attribute escaping.
fn escape_into(b: &mut Vec<u8>, s: &str) {
    for &c in s.as_bytes() {
        match c {
            b'&' => b.extend_from_slice(b"&amp;"),
            b'<' => b.extend_from_slice(b"&lt;"),
            b'>' => b.extend_from_slice(b"&gt;"),
            b'"' => b.extend_from_slice(b"&quot;"),
            _ => b.push(c),
        }
    }
}

/// Content type from the name's extension, as dav-server guesses it.
pub(crate) fn mime_type(name: &str) -> &'static str {
    let name = name.rsplit('/').next().unwrap_or(name);
    match name.rsplit_once('.') {
        Some((_, ext)) => mime_guess::from_ext(ext)
            .first_raw()
            .unwrap_or("application/octet-stream"),
        None => "application/octet-stream",
    }
}

/// `1996-12-19T16:39:57Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    //! The same PROPFINDs through this module and through dav-server, on one tree, with
    //! dead properties set by PROPPATCH: the answers must say the same (XML compared
    //! as namespaces, names and values, not as bytes).

    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use http::Request;
    use xmltree::{Element, XMLNode};

    use crate::handler::{read_body, DavUser, WebDav};
    use crate::locks::{LockSpaces, MemLockSpaces};
    use crate::memory::MemoryPort;
    use crate::port::DavPort;

    /// href -> status -> properties, each as "{ns}name=value" with child elements
    /// written the same way.
    type Answer = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

    fn flat(e: &Element) -> String {
        let mut s = format!("{{{}}}{}=", e.namespace.as_deref().unwrap_or(""), e.name);
        for c in &e.children {
            match c {
                XMLNode::Element(c) => s.push_str(&format!("[{}]", flat(c))),
                XMLNode::Text(t) | XMLNode::CData(t) => s.push_str(t.trim()),
                _ => {}
            }
        }
        s
    }

    fn answer_of(body: &[u8]) -> Answer {
        let root = Element::parse(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
        assert_eq!(root.name, "multistatus");
        let mut out = Answer::new();
        for r in root.children.iter().filter_map(XMLNode::as_element) {
            let href = r
                .get_child("href")
                .and_then(|h| h.get_text())
                .unwrap_or_default()
                .into_owned();
            let by_status = out.entry(href).or_default();
            for ps in r
                .children
                .iter()
                .filter_map(XMLNode::as_element)
                .filter(|c| c.name == "propstat")
            {
                let status = ps
                    .get_child("status")
                    .and_then(|s| s.get_text())
                    .unwrap_or_default()
                    .into_owned();
                let props = by_status.entry(status).or_default();
                if let Some(prop) = ps.get_child("prop") {
                    props.extend(prop.children.iter().filter_map(XMLNode::as_element).map(flat));
                }
            }
        }
        out
    }

    struct Setup {
        webdav: WebDav,
        port: Arc<MemoryPort>,
        locks: MemLockSpaces,
    }

    impl Setup {
        fn user(&self) -> DavUser {
            DavUser {
                principal: "alice".into(),
                port: self.port.clone(),
                locks: self.locks.for_user("alice"),
            }
        }

        fn request(method: &str, path: &str, depth: &str, body: &str) -> Request<dav_server::body::Body> {
            Request::builder()
                .method(method)
                .uri(path)
                .header("depth", depth)
                .body(dav_server::body::Body::from(body.to_owned()))
                .expect("valid request")
        }

        async fn ours(&self, path: &str, depth: &str, body: &str) -> (http::response::Parts, Vec<u8>) {
            let res = self
                .webdav
                .handle(Self::request("PROPFIND", path, depth, body), self.user())
                .await;
            let (parts, body) = res.into_parts();
            (parts, read_body(body, usize::MAX).await.expect("body").to_vec())
        }

        async fn dav_server(&self, path: &str, depth: &str, body: &str) -> (http::response::Parts, Vec<u8>) {
            let req = Self::request("PROPFIND", path, depth, body);
            let res = self.webdav.dav_server(req, self.user()).await;
            let (parts, body) = res.into_parts();
            (parts, read_body(body, usize::MAX).await.expect("body").to_vec())
        }
    }

    async fn setup() -> Setup {
        let port = Arc::new(MemoryPort::new());
        let docs = port.insert_dir(port.root_id(), "docs").expect("mkdir");
        port.insert_file(docs.id, "a.txt", b"hello").expect("file");
        port.insert_file(docs.id, "b b&c #1.html", b"<p>").expect("file");
        port.insert_file(docs.id, "\u{fc}n\u{ef}.json", b"{}").expect("file");
        port.insert_file(docs.id, "noext", b"").expect("file");
        let sub = port.insert_dir(docs.id, "sub dir").expect("mkdir");
        port.set_attrs(sub.id, None, Some(1_000_000_000_123))
            .await
            .expect("mtime");
        let s = Setup {
            webdav: WebDav::new("/dav"),
            port,
            locks: MemLockSpaces::new(),
        };
        let patch = |props: &str| {
            format!(
                r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z" xmlns:E="http://example.com/e"><D:set><D:prop>{props}</D:prop></D:set></D:propertyupdate>"#
            )
        };
        for (path, props) in [
            (
                "/dav/docs/a.txt",
                r#"<Z:color>red &amp; blue</Z:color><D:displayname>The A</D:displayname><E:nested><E:x a="1">y</E:x></E:nested>"#,
            ),
            ("/dav/docs/sub%20dir/", r#"<Z:color>green</Z:color>"#),
            ("/dav/docs/", r#"<Z:color>dir</Z:color><none xmlns="">plain</none>"#),
        ] {
            let req = Setup::request("PROPPATCH", path, "0", &patch(props));
            let res = s.webdav.dav_server(req, s.user()).await;
            assert_eq!(res.status(), http::StatusCode::MULTI_STATUS, "PROPPATCH {path}");
        }
        s
    }

    /// Our answer has dav-server's 200 properties (getetag with quotes), and each of
    /// `missing` either found or in a 404 propstat. For a `<prop>` request, `asked` names
    /// the properties requested: dav-server adds every dead property to any answer, we
    /// give what was asked (RFC 4918 9.1).
    fn assert_same(ours: &Answer, theirs: &Answer, asked: Option<&[&str]>, missing: &[&str], what: &str) {
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "hrefs of {what}"
        );
        for (href, t) in theirs {
            let o = &ours[href];
            let fix = |s: &String| match s.strip_prefix("{DAV:}getetag=") {
                Some(tag) => format!("{{DAV:}}getetag=\"{tag}\""),
                None => s.clone(),
            };
            let wanted = |s: &String| asked.is_none_or(|a| a.iter().any(|k| s.starts_with(&format!("{k}="))));
            let t_ok: BTreeSet<String> = t
                .get("HTTP/1.1 200 OK")
                .into_iter()
                .flatten()
                .filter(|s| wanted(s))
                .map(fix)
                .collect();
            let o_ok = o.get("HTTP/1.1 200 OK").cloned().unwrap_or_default();
            assert_eq!(o_ok, t_ok, "{what}: 200 properties of {href}");
            let nf: BTreeSet<String> = o.get("HTTP/1.1 404 Not Found").cloned().unwrap_or_default();
            for m in missing {
                let found = nf.iter().any(|n| n.starts_with(m)) || o_ok.iter().any(|n| n.starts_with(m));
                assert!(found, "{what}: {m} of {href} neither found nor 404: {o:?}");
            }
            assert!(nf.iter().all(|n| !o_ok.contains(n)), "{what}: {href}");
        }
    }

    #[tokio::test]
    async fn answers_say_what_dav_server_says() {
        let s = setup().await;
        let prop_req = r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:A="http://apache.org/dav/props/" xmlns:Z="urn:z"><D:prop>
            <D:getetag/><D:getcontentlength/><D:resourcetype/><D:getlastmodified/><D:creationdate/>
            <D:getcontenttype/><D:supportedlock/><D:lockdiscovery/><D:displayname/><A:executable/>
            <Z:color/><Z:nothing/><D:no-such-prop/><bare xmlns=""/></D:prop></D:propfind>"#;
        let allprop = r#"<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>"#;
        let cases = [
            ("/dav/docs/", "1", ""),
            ("/dav/docs/", "0", ""),
            ("/dav/docs", "1", allprop),
            ("/dav/", "1", allprop),
            ("/dav", "0", ""),
            ("/dav/docs/a.txt", "0", allprop),
            ("/dav/docs/b%20b%26c%20%231.html", "1", ""),
            ("/dav/docs/", "1", prop_req),
            ("/dav/docs/a.txt", "0", prop_req),
        ];
        for (path, depth, body) in cases {
            let what = format!(
                "PROPFIND {path} depth {depth} {}",
                if body.len() > 100 { "prop" } else { body }
            );
            let (op, ob) = s.ours(path, depth, body).await;
            let (tp, tb) = s.dav_server(path, depth, body).await;
            assert_eq!(op.status, tp.status, "{what}");
            for h in ["content-type", "content-location", "cache-control", "pragma"] {
                assert_eq!(op.headers.get(h), tp.headers.get(h), "{what}: {h}");
            }
            let (asked, missing): (Option<&[&str]>, &[&str]) = if body.len() > 100 {
                (
                    Some(&[
                        "{DAV:}getetag",
                        "{DAV:}getcontentlength",
                        "{DAV:}resourcetype",
                        "{DAV:}getlastmodified",
                        "{DAV:}creationdate",
                        "{DAV:}getcontenttype",
                        "{DAV:}supportedlock",
                        "{DAV:}lockdiscovery",
                        "{DAV:}displayname",
                        "{http://apache.org/dav/props/}executable",
                        "{urn:z}color",
                    ]),
                    &[
                        "{urn:z}nothing",
                        "{DAV:}no-such-prop",
                        "{}bare",
                        "{urn:z}color",
                        "{DAV:}displayname",
                    ],
                )
            } else {
                (None, &[])
            };
            assert_same(&answer_of(&ob), &answer_of(&tb), asked, missing, &what);
        }
    }

    #[tokio::test]
    async fn declines_what_it_does_not_handle() {
        let s = setup().await;
        s.port.reset_calls();
        // propname, quota and locked trees go to dav-server: same answer whoever writes it.
        let propname = r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>"#;
        let quota =
            r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/></D:prop></D:propfind>"#;
        for body in [propname, quota] {
            let (op, ob) = s.ours("/dav/docs/", "1", body).await;
            let (tp, tb) = s.dav_server("/dav/docs/", "1", body).await;
            assert_eq!(op.status, tp.status);
            assert_eq!(answer_of(&ob), answer_of(&tb));
        }
        assert!(super::parse(b"<nope", "").is_none());
        assert!(super::parse(b"", "Microsoft-WebDAV-MiniRedir/10.0").is_none());
        assert_eq!(super::parse(b"", "davfs2"), Some(super::Request::AllProp));
    }

    #[tokio::test]
    async fn lists_with_one_listing_and_one_property_call() {
        let s = setup().await;
        s.port.reset_calls();
        let (p, _) = s.ours("/dav/docs/", "1", "").await;
        assert_eq!(p.status, http::StatusCode::MULTI_STATUS);
        let c = s.port.calls();
        // One listing; the memory port has no single-query get_props_dir, its default
        // lists once more.
        assert!(c.list <= 2, "{c:?}");
        assert!(c.get_props_many <= 1 && c.get_props == 0, "{c:?}");
    }

    #[test]
    fn dates() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_secs(851_042_397);
        assert_eq!(super::rfc3339(t), "1996-12-20T00:39:57Z");
        assert_eq!(
            super::rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
