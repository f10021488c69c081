//! The S3 content store against a real Ceph RGW (`scripts/ceph-rgw.sh`, one cluster in
//! `/tmp/filestore-ceph` shared by every test binary; `FILESTORE_TEST_CEPH_DIR` moves it).
//! Ceph must be installed (`scripts/ceph-rgw.sh install`, which the test command runs):
//! without it these tests fail, they do not skip. Each test uses a bucket of its own.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use filestore::blob::{BlobError, BlobStore, S3Store};
use filestore::config::S3Config;
use filestore::meta::Content;
use futures_util::{FutureExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::sync::RwLock;

const MIB: u64 = 1 << 20;

/// The memory test measures the whole process: it runs alone, the others share.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// What `scripts/ceph-rgw.sh start` printed.
struct Cluster {
    endpoint: String,
    region: String,
    access_key: String,
    secret_key: String,
    vhost_domain: String,
    ceph_conf: String,
}

/// Starts the cluster once per test binary (the script is idempotent and takes a lock, so
/// binaries running at once share one cluster).
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = std::env::var("FILESTORE_TEST_CEPH_DIR").unwrap_or_else(|_| "/tmp/filestore-ceph".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-rgw.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/ceph-rgw.sh");
        assert!(
            out.status.success(),
            "could not start Ceph RGW with `{} start {dir}` (is Ceph installed? `scripts/ceph-rgw.sh install`):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 exports");
        let var = |name: &str| {
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
                .unwrap_or_else(|| panic!("ceph-rgw.sh printed no {name}:\n{stdout}"))
        };
        Cluster {
            endpoint: var("S3_ENDPOINT"),
            region: var("S3_REGION"),
            access_key: var("AWS_ACCESS_KEY_ID"),
            secret_key: var("AWS_SECRET_ACCESS_KEY"),
            vhost_domain: var("S3_VHOST_DOMAIN"),
            ceph_conf: var("CEPH_CONF"),
        }
    })
}

/// A configuration for a bucket of this test's own.
fn config() -> S3Config {
    let c = cluster();
    S3Config {
        endpoint: c.endpoint.clone(),
        region: c.region.clone(),
        bucket: format!("fstest-{}", filestore::util::random_hex(6)),
        key_prefix: "objects/".into(),
        access_key: c.access_key.clone(),
        secret_key: c.secret_key.clone(),
        path_style: true,
        part_size: 8 * MIB,
        parallelism: 4,
        ..Default::default()
    }
}

async fn store(cfg: &S3Config) -> S3Store {
    let s = S3Store::new(cfg).await.expect("S3Store::new");
    s.ensure_bucket().await.expect("create the test bucket");
    s
}

/// Deletes every object and pending upload of the test's bucket, then the bucket.
async fn drop_bucket(s: &S3Store) {
    let c = s.client();
    let mut token = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket(s.bucket())
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        for o in page.contents() {
            c.delete_object()
                .bucket(s.bucket())
                .key(o.key().unwrap())
                .send()
                .await
                .expect("delete");
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let uploads = c
        .list_multipart_uploads()
        .bucket(s.bucket())
        .send()
        .await
        .expect("list uploads");
    for u in uploads.uploads() {
        s.abort_upload(u.key().unwrap(), u.upload_id().unwrap())
            .await
            .expect("abort");
    }
    c.delete_bucket()
        .bucket(s.bucket())
        .send()
        .await
        .expect("delete bucket");
}

/// Every multipart upload of the bucket, under any prefix.
async fn all_pending(s: &S3Store) -> Vec<String> {
    let out = s
        .client()
        .list_multipart_uploads()
        .bucket(s.bucket())
        .send()
        .await
        .expect("ListMultipartUploads");
    out.uploads()
        .iter()
        .map(|u| u.key().unwrap_or_default().to_owned())
        .collect()
}

/// A file of `size` pseudo-random bytes (from `seed`), written 1 MiB at a time.
fn make_file(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    let mut x = seed | 1;
    let mut chunk = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        let n = left.min(MIB) as usize;
        f.write_all(&chunk[..n]).expect("write");
        left -= n as u64;
    }
    f.into_inner().expect("flush").sync_all().expect("sync");
    path
}

fn file_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn content(sha1: &str, size: u64, object_key: Option<String>) -> Content {
    Content {
        sha1: sha1.into(),
        sha256: String::new(),
        size: size as i64,
        refcount: 1,
        store: "s3".into(),
        object_key,
        zero_since: None,
        created_at: 0,
        data: None,
    }
}

async fn read_all(s: &S3Store, c: &Content, offset: u64, len: u64) -> Vec<u8> {
    let chunks: Vec<bytes::Bytes> = s
        .read(c, offset, len)
        .await
        .expect("read")
        .try_collect()
        .await
        .expect("body");
    chunks.concat()
}

/// The ETag S3 gives a multipart upload of `path` in parts of `part` bytes.
fn multipart_etag(path: &Path, size: u64, part: u64) -> String {
    let mut of_parts = Md5::new();
    let mut offset = 0;
    while offset < size {
        let len = part.min(size - offset);
        of_parts.update(Md5::digest(file_range(path, offset, len)));
        offset += len;
    }
    format!("{}-{}", hex::encode(of_parts.finalize()), size.div_ceil(part))
}

async fn etag(s: &S3Store, key: &str) -> String {
    let head = s
        .client()
        .head_object()
        .bucket(s.bucket())
        .key(key)
        .send()
        .await
        .expect("head");
    head.e_tag().unwrap_or_default().trim_matches('"').to_owned()
}

fn transient(e: &BlobError) -> Option<bool> {
    match e {
        BlobError::Remote { transient, .. } => Some(*transient),
        _ => None,
    }
}

#[tokio::test]
async fn small_objects_put_head_read_range_delete() {
    let _shared = EXCLUSIVE.read().await;
    let cfg = config();
    let s = store(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "small", 1000, 7);
    let bytes = std::fs::read(&path).unwrap();
    let sha1 = "0123456789abcdef0123456789abcdef01234567";
    let key = s.key(sha1);
    assert_eq!(key, format!("objects/{sha1}"));

    assert_eq!(s.head(&key).await.unwrap(), None);
    s.put_file(&key, &path, 1000).await.expect("put");
    assert_eq!(s.head(&key).await.unwrap(), Some(1000));
    assert_eq!(
        etag(&s, &key).await,
        hex::encode(Md5::digest(&bytes)),
        "single PUT ETag is the MD5"
    );

    let c = content(sha1, 1000, None);
    assert_eq!(read_all(&s, &c, 0, 1000).await, bytes);
    assert_eq!(read_all(&s, &c, 10, 20).await, &bytes[10..30]);
    assert_eq!(read_all(&s, &c, 999, 1).await, &bytes[999..]);
    assert!(read_all(&s, &c, 0, 0).await.is_empty());
    // The content row's key wins over the derived one.
    let other = content("ffffffffffffffffffffffffffffffffffffffff", 1000, Some(key.clone()));
    assert_eq!(read_all(&s, &other, 500, 500).await, &bytes[500..]);

    // An empty file is an object too.
    let empty = make_file(dir.path(), "empty", 0, 1);
    let empty_key = s.key("da39a3ee5e6b4b0d3255bfef95601890afd80709");
    s.put_file(&empty_key, &empty, 0).await.expect("put empty");
    assert_eq!(s.head(&empty_key).await.unwrap(), Some(0));

    // A size that is not the file's is refused before anything is sent.
    let wrong = s.put_file(&s.key("wrong"), &path, 999).await.unwrap_err();
    assert!(matches!(wrong, BlobError::Io(_)), "{wrong:?}");
    assert_eq!(s.head(&s.key("wrong")).await.unwrap(), None);

    let mut keys = s.list_keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, vec![key.clone(), empty_key.clone()]);

    s.delete(&key).await.expect("delete");
    s.delete(&key).await.expect("deleting a missing object is fine");
    assert_eq!(s.head(&key).await.unwrap(), None);
    match s.read(&c, 0, 10).await {
        Err(BlobError::Missing(k)) => assert_eq!(k, key),
        Err(e) => panic!("expected Missing, got {e:?}"),
        Ok(_) => panic!("read a deleted object"),
    }
    drop_bucket(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_is_verified_and_ranges_cross_parts() {
    let _shared = EXCLUSIVE.read().await;
    let cfg = config();
    let s = store(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * MIB + 123; // five whole parts and a short one
    let path = make_file(dir.path(), "big", size, 11);
    let key = s.key("1111111111111111111111111111111111111111");

    s.put_file(&key, &path, size).await.expect("multipart put");
    assert_eq!(s.head(&key).await.unwrap(), Some(size));
    let tag = etag(&s, &key).await;
    assert_eq!(tag, multipart_etag(&path, size, 8 * MIB));
    assert!(tag.ends_with("-6"), "{tag}");
    assert!(all_pending(&s).await.is_empty(), "the completed upload is not pending");

    let c = content("1111111111111111111111111111111111111111", size, None);
    let p = 8 * MIB;
    for (offset, len) in [
        (0, 1),
        (p - 1, 2),          // across the first boundary
        (p, p),              // exactly the second part
        (2 * p - 5, p + 10), // spanning three parts
        (5 * p, 123),        // the short last part
        (size - 1, 1),       // the last byte
        (3 * p + 17, 2 * MIB),
    ] {
        assert_eq!(
            read_all(&s, &c, offset, len).await,
            file_range(&path, offset, len),
            "bytes {offset}+{len}"
        );
    }
    drop_bucket(&s).await;
}

/// Runs `radosgw-admin` against the test cluster.
fn radosgw_admin(args: &[&str]) {
    let out = Command::new("radosgw-admin")
        .arg("-c")
        .arg(&cluster().ceph_conf)
        .args(args)
        .output()
        .expect("run radosgw-admin");
    assert!(
        out.status.success(),
        "radosgw-admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_leave_no_object_and_no_pending_upload() {
    let _shared = EXCLUSIVE.read().await;
    let cfg = config();
    let s = store(&cfg).await;
    // A bucket quota of 4 MiB: the server refuses every part (and every PUT) above it, after
    // the multipart upload was created.
    radosgw_admin(&[
        "quota",
        "set",
        "--quota-scope=bucket",
        "--bucket",
        s.bucket(),
        "--max-size=4194304",
    ]);
    radosgw_admin(&["quota", "enable", "--quota-scope=bucket", "--bucket", s.bucket()]);
    let dir = tempfile::tempdir().unwrap();

    let big = make_file(dir.path(), "big", 20 * MIB, 3);
    let key = s.key("2222222222222222222222222222222222222222");
    let err = s.put_file(&key, &big, 20 * MIB).await.expect_err("over the quota");
    assert_eq!(transient(&err), Some(false), "a refusal is not worth retrying: {err:?}");
    assert!(err.to_string().contains("UploadPart"), "{err}");
    assert_eq!(s.head(&key).await.unwrap(), None);
    assert!(all_pending(&s).await.is_empty(), "the failed upload was aborted");
    assert!(s.pending_uploads().await.unwrap().is_empty());

    let single = make_file(dir.path(), "single", 6 * MIB, 4);
    let key = s.key("3333333333333333333333333333333333333333");
    let err = s.put_file(&key, &single, 6 * MIB).await.expect_err("over the quota");
    assert_eq!(transient(&err), Some(false), "{err:?}");
    assert_eq!(s.head(&key).await.unwrap(), None);
    assert!(s.list_keys().await.unwrap().is_empty());
    drop_bucket(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_is_aborted() {
    let _shared = EXCLUSIVE.read().await;
    let mut cfg = config();
    cfg.parallelism = 1;
    let s = store(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 96 * MIB;
    let path = make_file(dir.path(), "big", size, 5);
    let key = s.key("4444444444444444444444444444444444444444");

    // Given up while CreateMultipartUpload is out: polled once (the request goes out), then
    // dropped once the server has the upload.
    let mut put = Box::pin(s.put_file(&key, &path, size));
    assert!((&mut put).now_or_never().is_none());
    let deadline = Instant::now() + Duration::from_secs(30);
    while all_pending(&s).await.is_empty() {
        assert!(Instant::now() < deadline, "the upload was never created");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(put);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_pending(&s).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the upload dropped while created is still pending after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Given up while parts are going up.
    let mut put = Box::pin(s.put_file(&key, &path, size));
    // Wait until a part is stored: the upload is well under way.
    let started = async {
        loop {
            if let Some(u) = s.pending_uploads().await.unwrap().first() {
                let parts = s
                    .client()
                    .list_parts()
                    .bucket(s.bucket())
                    .key(&u.key)
                    .upload_id(&u.upload_id)
                    .send()
                    .await
                    .expect("ListParts");
                if !parts.parts().is_empty() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        r = &mut put => panic!("the upload ended before it was seen pending: {r:?}"),
        () = started => {}
    }
    // Drop the future mid-upload: the abort runs in a spawned task.
    drop(put);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_pending(&s).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the dropped upload is still pending after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.head(&key).await.unwrap(), None);
    drop_bucket(&s).await;
}

#[tokio::test]
async fn presigned_urls_download_with_content_disposition() {
    let _shared = EXCLUSIVE.read().await;
    let cfg = config();
    let s = store(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "doc", 5000, 9);
    let key = s.key("5555555555555555555555555555555555555555");
    s.put_file(&key, &path, 5000).await.unwrap();

    let url = s
        .presign_get(&key, Duration::from_secs(60), "résumé \"final\".pdf")
        .await
        .expect("presign");
    assert!(
        url.starts_with(&format!("{}/{}/", cluster().endpoint, s.bucket())),
        "{url}"
    );
    let http = reqwest::Client::new();
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        header("content-disposition").as_deref(),
        Some("attachment; filename=\"r_sum_ _final_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf")
    );
    assert_eq!(header("content-type").as_deref(), Some("application/pdf"));
    assert_eq!(res.bytes().await.unwrap(), std::fs::read(&path).unwrap());

    // A range through the link, and a tampered link.
    let res = http.get(&url).header("range", "bytes=100-199").send().await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), file_range(&path, 100, 100));
    let tampered = url.replace("X-Amz-Expires=60", "X-Amz-Expires=6000");
    assert_ne!(tampered, url);
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);
    drop_bucket(&s).await;
}

/// Resolves `BUCKET.<domain>` names to loopback and fails every other name, recording
/// what was asked: a path-style request (to the bare domain) cannot get through.
#[derive(Debug, Clone)]
struct BucketHosts {
    domain: String,
    asked: Arc<Mutex<BTreeSet<String>>>,
}

impl ResolveDns for BucketHosts {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        self.asked.lock().unwrap().insert(name.to_owned());
        let suffix = format!(".{}", self.domain);
        if name.ends_with(&suffix) && name.len() > suffix.len() {
            DnsFuture::ready(Ok(vec![IpAddr::from([127, 0, 0, 1])]))
        } else {
            DnsFuture::ready(Err(ResolveDnsError::new(format!("{name}: not a bucket host"))))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosted_addressing() {
    let _shared = EXCLUSIVE.read().await;
    let c = cluster();
    let port = c.endpoint.rsplit(':').next().unwrap().to_owned();
    let mut cfg = config();
    cfg.endpoint = format!("http://{}:{port}", c.vhost_domain);
    cfg.path_style = false;
    let resolver = BucketHosts {
        domain: c.vhost_domain.clone(),
        asked: Arc::default(),
    };
    let s = S3Store::with_resolver(&cfg, resolver.clone()).await.unwrap();
    s.ensure_bucket().await.expect("create the bucket, virtual-hosted");
    s.ping().await.expect("ping");
    let bucket_host = format!("{}.{}", cfg.bucket, c.vhost_domain);

    let dir = tempfile::tempdir().unwrap();
    let small = make_file(dir.path(), "small", 3000, 1);
    let big = make_file(dir.path(), "big", 17 * MIB, 2);
    let (k1, k2) = (
        s.key("6666666666666666666666666666666666666666"),
        s.key("7777777777777777777777777777777777777777"),
    );
    s.put_file(&k1, &small, 3000).await.expect("single PUT");
    s.put_file(&k2, &big, 17 * MIB).await.expect("multipart");
    assert_eq!(s.head(&k2).await.unwrap(), Some(17 * MIB));
    let c2 = content("7777777777777777777777777777777777777777", 17 * MIB, None);
    assert_eq!(
        read_all(&s, &c2, 8 * MIB - 3, 6).await,
        file_range(&big, 8 * MIB - 3, 6)
    );
    let mut keys = s.list_keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, vec![k1.clone(), k2.clone()]);

    let url = s.presign_get(&k1, Duration::from_secs(60), "a.bin").await.unwrap();
    assert!(url.starts_with(&format!("http://{bucket_host}:{port}/{k1}?")), "{url}");
    let http = reqwest::Client::builder()
        .resolve(&bucket_host, format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), std::fs::read(&small).unwrap());

    s.delete(&k1).await.unwrap();
    s.delete(&k2).await.unwrap();
    assert!(s.list_keys().await.unwrap().is_empty());
    let asked = resolver.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        BTreeSet::from([bucket_host]),
        "only the bucket's host name was looked up"
    );
    drop_bucket(&s).await;
}

#[tokio::test]
async fn list_keys_pages_and_keeps_to_the_prefix() {
    let _shared = EXCLUSIVE.read().await;
    let cfg = config();
    let s = store(&cfg).await.with_list_page_size(2);
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), "f", 10, 1);
    let mut want = Vec::new();
    for i in 0..5 {
        let key = s.key(&format!("{i:040}"));
        s.put_file(&key, &path, 10).await.unwrap();
        want.push(key);
    }
    let mut elsewhere = cfg.clone();
    elsewhere.key_prefix = "other/".into();
    let other = S3Store::new(&elsewhere).await.unwrap();
    other.put_file(&other.key("x"), &path, 10).await.unwrap();

    let mut keys = s.list_keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, want);
    assert_eq!(other.list_keys().await.unwrap(), vec!["other/x".to_owned()]);
    drop_bucket(&s).await;
}

#[tokio::test]
async fn errors_say_whether_to_retry() {
    let _shared = EXCLUSIVE.read().await;
    let cfg = config();
    let s = store(&cfg).await;
    s.ping().await.expect("ping");

    let mut bad_secret = cfg.clone();
    bad_secret.secret_key = "not-the-secret".into();
    let e = S3Store::new(&bad_secret).await.unwrap().ping().await.unwrap_err();
    assert_eq!(transient(&e), Some(false), "{e:?}");
    assert!(!e.is_transient());

    let mut no_bucket = cfg.clone();
    no_bucket.bucket = format!("fstest-missing-{}", filestore::util::random_hex(4));
    let e = S3Store::new(&no_bucket).await.unwrap().ping().await.unwrap_err();
    assert_eq!(transient(&e), Some(false), "{e:?}");

    // Nothing listens on port 1: connection refused, worth retrying later.
    let mut down = cfg.clone();
    down.endpoint = "http://127.0.0.1:1".into();
    let e = S3Store::new(&down).await.unwrap().ping().await.unwrap_err();
    assert_eq!(transient(&e), Some(true), "{e:?}");
    assert!(e.is_transient());

    let mut no_endpoint = cfg.clone();
    no_endpoint.endpoint = String::new();
    assert!(matches!(S3Store::new(&no_endpoint).await, Err(BlobError::Config(_))));
    assert!(matches!(
        s.presign_get("k", Duration::from_secs(8 * 24 * 3600), "x").await,
        Err(BlobError::Config(_))
    ));
    drop_bucket(&s).await;
}

/// Peak resident memory since the last reset, and the current one, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_with_bounded_memory() {
    // Alone in the process: the peak RSS of every thread counts.
    let _alone = EXCLUSIVE.write().await;
    let mut cfg = config();
    cfg.part_size = 8 * MIB;
    cfg.parallelism = 4;
    let s = store(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 256 * MIB;
    let path = make_file(dir.path(), "huge", size, 13);
    let key = s.key("8888888888888888888888888888888888888888");
    // A small upload first, so the client's one-time allocations are not counted.
    let warm = make_file(dir.path(), "warm", 6 * MIB, 1);
    s.put_file(&s.key("warm"), &warm, 6 * MIB).await.unwrap();

    // "5" resets the peak (VmHWM) to the current RSS (Linux 4.0+).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let (_, before) = memory();
    s.put_file(&key, &path, size).await.expect("256 MiB upload");
    let (peak, _) = memory();
    let growth = peak.saturating_sub(before);
    eprintln!("256 MiB upload: peak RSS grew by {} KiB", growth / 1024);
    // Well below what buffering the parts in flight would take (parallelism x part size).
    assert!(
        growth < 32 * MIB,
        "peak RSS grew by {} MiB during a 256 MiB upload",
        growth / MIB
    );
    assert_eq!(s.head(&key).await.unwrap(), Some(size));
    assert_eq!(etag(&s, &key).await, multipart_etag(&path, size, 8 * MIB));

    // Reading it back streams too.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (_, before) = memory();
    let c = content("8888888888888888888888888888888888888888", size, None);
    let mut body = s.read(&c, 0, size).await.unwrap();
    let mut hasher = Md5::new();
    let mut got = 0u64;
    while let Some(chunk) = body.try_next().await.unwrap() {
        got += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let (peak, _) = memory();
    assert_eq!(got, size);
    let mut whole = Md5::new();
    let file = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..size / MIB {
        file.read_exact_at(&mut buf, i * MIB).unwrap();
        whole.update(&buf);
    }
    assert_eq!(hasher.finalize(), whole.finalize());
    let growth = peak.saturating_sub(before);
    eprintln!("256 MiB download: peak RSS grew by {} KiB", growth / 1024);
    // Well below what buffering the body, or a part of it, would take.
    assert!(
        growth < 32 * MIB,
        "peak RSS grew by {} MiB during a 256 MiB download",
        growth / MIB
    );
    drop_bucket(&s).await;
}
