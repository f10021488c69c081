//! The transfer pipeline against a real Ceph RGW (`scripts/ceph-rgw.sh`) and the real
//! RabbitMQ: in-process transfers, `filestore transfer` workers killed at random points,
//! the broker or S3 unreachable, content deleted while its transfer is queued.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Backend, TestServer};
use filestore::config::{Config, QueueConfig, S3Config};
use filestore::meta::MetaStore;
use serde_json::Value;
use sha1::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_filestore");

/// `scripts/ceph-rgw.sh start` once per test binary (idempotent and locked, so several
/// test binaries share one cluster). Ceph must be installed: this fails, never skips.
fn ceph() -> &'static Vec<(String, String)> {
    static ENV: OnceLock<Vec<(String, String)>> = OnceLock::new();
    ENV.get_or_init(|| {
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
            "Ceph RGW did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches(|c| c == '\'' || c == '"').to_string()))
            .collect()
    })
}

fn ceph_var(name: &str) -> String {
    ceph()
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name}"))
}

/// A bucket of the test's own on the cluster.
fn s3_config() -> S3Config {
    S3Config {
        endpoint: ceph_var("S3_ENDPOINT"),
        region: ceph_var("S3_REGION"),
        bucket: format!("fstest-{}", filestore::util::random_hex(5)),
        key_prefix: "objects/".into(),
        access_key: ceph_var("AWS_ACCESS_KEY_ID"),
        secret_key: ceph_var("AWS_SECRET_ACCESS_KEY"),
        path_style: true,
        part_size: 5 << 20,
        parallelism: 4,
        ..Default::default()
    }
}

fn amqp_url() -> String {
    std::env::var("FILESTORE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Exchange and queues of the test's own.
fn queue_config() -> QueueConfig {
    let tag = filestore::util::random_hex(5);
    QueueConfig {
        amqp_url: amqp_url(),
        exchange: format!("fstest.{tag}.trans"),
        queue: format!("fstest.{tag}.trans.oss"),
        dead_letter_queue: format!("fstest.{tag}.trans.oss.err"),
        max_attempts: 3,
        retry_base_secs: 1,
        ..Default::default()
    }
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(b))
}

fn payload(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) >> 11) as u8)
        .collect()
}

/// Waits (bounded) until `cond` holds.
async fn until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn counts(meta: &MetaStore) -> std::collections::BTreeMap<String, i64> {
    meta.job_counts().await.unwrap().into_iter().collect()
}

fn local_objects(data: &Path) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&data.join("staging/objects"))
}

/// The embedded pipeline: S3 configured, no RabbitMQ. Content moves, staging empties,
/// reads (whole and ranged, both APIs) keep working, deletes reach S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_transfer() {
    let s3 = s3_config();
    let s = TestServer::start_with(Backend::Sqlite, |c: &mut Config| {
        c.s3 = S3Config {
            presign_downloads: true,
            ..s3.clone()
        };
        c.storage.gc_grace_secs = 0;
    })
    .await
    .unwrap();
    let token = s.user("alice").await;
    let files = [payload(1000, 1), payload(12 << 20, 2), payload(3 << 20, 3)];
    for (i, f) in files.iter().enumerate() {
        let r = s
            .http
            .put(s.url(&format!("/api/v1/files/f{i}")))
            .bearer_auth(&token)
            .body(f.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let meta = s.running().services().meta.clone();
    until("transfers done", Duration::from_secs(120), || {
        let meta = meta.clone();
        async move { counts(&meta).await.get("done") == Some(&3) }
    })
    .await;
    let data = s.db.dir.path().join("data");
    assert_eq!(local_objects(&data), 0, "staging copies removed");
    for (i, f) in files.iter().enumerate() {
        let c = meta.content(&sha1_hex(f)).await.unwrap().unwrap();
        // f0 (1000 bytes) was kept in its row until it moved: the row's copy goes with it.
        assert_eq!((c.store.as_str(), c.data.is_none()), ("s3", true));
        let r = s
            .http
            .get(s.url(&format!("/api/v1/files/f{i}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(r.bytes().await.unwrap() == f[..], "f{i} read back from S3");
        // WebDAV reads local content without the row; with the staging copy gone the
        // row sends it to S3.
        let r = s
            .http
            .get(s.url(&format!("/dav/f{i}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "WebDAV GET of f{i}");
        assert!(r.bytes().await.unwrap() == f[..], "f{i} read back from S3 over WebDAV");
    }
    // Ranged reads across a multipart boundary, through both APIs.
    let big = &files[1];
    let r = s
        .http
        .get(s.url("/api/v1/files/f1"))
        .bearer_auth(&token)
        .header("range", "bytes=5242870-5242889")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &big[5242870..5242890]);
    let r = s
        .http
        .get(s.url(&format!("/file/download?filehash={}", sha1_hex(big))))
        .bearer_auth(&token)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &big[100..200]);
    // downloadurl hands out a presigned S3 URL that saves under the user's file name.
    let r = s
        .http
        .get(s.url(&format!("/file/downloadurl?filehash={}", sha1_hex(&files[2]))))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let url = r.text().await.unwrap();
    assert!(url.starts_with(&ceph_var("S3_ENDPOINT")), "{url}");
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"].to_str().unwrap().contains("f2"));
    assert!(r.bytes().await.unwrap() == files[2][..]);
    // A re-upload of transferred content is a dedup hit: nothing new in staging.
    let r = s
        .http
        .put(s.url("/api/v1/files/again"))
        .bearer_auth(&token)
        .body(files[0].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(local_objects(&data), 0);
    // Deleting every entry and collecting removes the objects.
    for name in ["f0", "f1", "f2", "again"] {
        s.http
            .delete(s.url(&format!("/api/v1/files/{name}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    let svc = s.running().services();
    let store = svc.s3.clone().unwrap();
    filestore::gc::collect_garbage(&meta, svc.staging.objects(), Some(&store), Duration::ZERO)
        .await
        .unwrap();
    assert!(store.list_keys().await.unwrap().is_empty(), "no orphaned object");
    s.stop().await;
}

/// A config file for the real binary.
fn write_config(dir: &Path, db_url: &str, s3: &S3Config, q: &QueueConfig, extra: &str) -> PathBuf {
    let p = dir.join("filestore.toml");
    let text = format!(
        "data_dir = \"{data}\"\n{extra}\n[database]\nurl = \"{db_url}\"\n[storage]\ngc_grace_secs = 0\n\
         [s3]\nendpoint = \"{ep}\"\nregion = \"{region}\"\nbucket = \"{bucket}\"\naccess_key = \"{ak}\"\nsecret_key = \"{sk}\"\npart_size = {ps}\n\
         [queue]\namqp_url = \"{amqp}\"\nexchange = \"{ex}\"\nqueue = \"{queue}\"\ndead_letter_queue = \"{dlq}\"\nmax_attempts = {ma}\nretry_base_secs = {rb}\n",
        data = dir.join("data").display(),
        ep = s3.endpoint,
        region = s3.region,
        bucket = s3.bucket,
        ak = s3.access_key,
        sk = s3.secret_key,
        ps = s3.part_size,
        amqp = q.amqp_url,
        ex = q.exchange,
        queue = q.queue,
        dlq = q.dead_letter_queue,
        ma = q.max_attempts,
        rb = q.retry_base_secs,
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// A child process that is killed when dropped, so a failing test leaks no server.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path, args: &[&str]) -> Proc {
    Proc(
        Command::new(BIN)
            .arg("-c")
            .arg(config)
            .args(args)
            .env("FILESTORE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Starts `filestore serve`; returns the process and its base URL.
fn serve(config: &Path) -> (Proc, String) {
    let mut child = spawn(config, &["serve", "--listen", "127.0.0.1:0"]);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let base = lines
        .by_ref()
        .find_map(|l| {
            l.strip_prefix("filestore: serving ")
                .map(|u| u.trim_end_matches('/').to_string())
        })
        .expect("server announced its URL");
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

fn kill(c: Proc) {
    drop(c);
}

async fn signup(http: &reqwest::Client, base: &str) -> String {
    let creds = serde_json::json!({"username": "alice", "password": "password-of-alice"});
    http.post(format!("{base}/api/v1/auth/signup"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    let v: Value = http
        .post(format!("{base}/api/v1/auth/signin"))
        .json(&creds)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// 200 transfers through RabbitMQ while workers are SIGKILLed at random points: every
/// content ends up in S3 with the right bytes, the database agrees, staging is empty, and
/// no object is orphaned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_killed_at_random_points() {
    let Some(db) = common::TestDb::new(Backend::MySql).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (s3, q) = (s3_config(), queue_config());
    let cfg = write_config(dir.path(), &db.url, &s3, &q, "");
    let (server, base) = serve(&cfg);
    let http = reqwest::Client::new();
    let token = signup(&http, &base).await;
    let mut expected = Vec::new();
    for i in 0..200u32 {
        let body = payload(4096 + (i as usize * 37) % 3000, 1000 + i);
        expected.push(sha1_hex(&body));
        let r = http
            .put(format!("{base}/api/v1/files/f{i:03}"))
            .bearer_auth(&token)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let meta = MetaStore::connect(&db.url, 2).await.unwrap();
    // Kill points: after a pseudo-random number of further completions (seeded, so a
    // failure replays), or the moment the worker first sees work.
    let mut seed = 0x9e3779b9u32;
    let mut kills = 0;
    loop {
        let c = counts(&meta).await;
        let done = c.get("done").copied().unwrap_or(0);
        if done == 200 {
            break;
        }
        let worker = spawn(&cfg, &["transfer"]);
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        let step = 1 + i64::from(seed >> 27); // 1..=32 completions
        let target = (done + step).min(200);
        let m = meta.clone();
        until("worker progress", Duration::from_secs(120), || {
            let m = m.clone();
            async move { counts(&m).await.get("done").copied().unwrap_or(0) >= target }
        })
        .await;
        if target < 200 {
            kill(worker);
            kills += 1;
        } else {
            kill(worker);
        }
    }
    assert!(kills >= 3, "the worker was killed several times ({kills})");
    kill(server);
    // The database agrees, the bytes are right, staging is empty, nothing is orphaned.
    let store = filestore::blob::s3::S3Store::new(&s3).await.unwrap();
    let mut keys = BTreeSet::new();
    for sha1 in &expected {
        let c = meta.content(sha1).await.unwrap().unwrap();
        assert_eq!(c.store, "s3", "{sha1}");
        let key = c.object_key.clone().unwrap();
        let mut stream = filestore::blob::BlobStore::read(&store, &c, 0, c.size as u64)
            .await
            .unwrap();
        let mut h = sha1::Sha1::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            h.update(chunk.unwrap());
        }
        assert_eq!(&hex::encode(h.finalize()), sha1, "object bytes");
        keys.insert(key);
    }
    let listed: BTreeSet<String> = store.list_keys().await.unwrap().into_iter().collect();
    assert_eq!(listed, keys, "exactly one object per content, none orphaned");
    assert_eq!(local_objects(&dir.path().join("data")), 0, "staging is empty");
    meta.close().await;
    db.cleanup().await;
}

/// RabbitMQ unreachable at upload time: the upload succeeds, the job waits in the outbox,
/// and is published (and transferred) once a relay can reach the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_down_then_back() {
    let Some(db) = common::TestDb::new(Backend::MySql).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (s3, q) = (s3_config(), queue_config());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = QueueConfig {
        amqp_url: format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"),
        ..q.clone()
    };
    let cfg_down = write_config(dir.path(), &db.url, &s3, &down, "");
    let (server, base) = serve(&cfg_down);
    let http = reqwest::Client::new();
    let token = signup(&http, &base).await;
    let body = payload(100_000, 7);
    let r = http
        .put(format!("{base}/api/v1/files/waiting"))
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "uploads do not need the broker");
    let meta = MetaStore::connect(&db.url, 2).await.unwrap();
    assert_eq!(counts(&meta).await.get("pending"), Some(&1));
    kill(server);
    // The broker is back (the real URL), with a worker.
    let cfg_up = write_config(dir.path(), &db.url, &s3, &q, "");
    let (server, base) = serve(&cfg_up);
    let worker = spawn(&cfg_up, &["transfer"]);
    let m = meta.clone();
    until("the job to be published and done", Duration::from_secs(60), || {
        let m = m.clone();
        async move { counts(&m).await.get("done") == Some(&1) }
    })
    .await;
    let r = http
        .get(format!("{base}/api/v1/files/waiting"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == body);
    assert_eq!(meta.content(&sha1_hex(&body)).await.unwrap().unwrap().store, "s3");
    kill(worker);
    kill(server);
    meta.close().await;
    db.cleanup().await;
}

/// S3 unreachable: jobs retry, then dead-letter (visible in `transfer status`), reads keep
/// working from staging; `transfer retry` once S3 is back finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_down_retries_then_dead_letters() {
    let Some(db) = common::TestDb::new(Backend::MySql).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (s3, q) = (s3_config(), queue_config());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s3_down = S3Config {
        endpoint: format!("http://127.0.0.1:{closed}"),
        ..s3.clone()
    };
    let cfg_down = write_config(dir.path(), &db.url, &s3_down, &q, "");
    let (server, base) = serve(&cfg_down);
    let worker = spawn(&cfg_down, &["transfer"]);
    let http = reqwest::Client::new();
    let token = signup(&http, &base).await;
    let body = payload(50_000, 8);
    let r = http
        .put(format!("{base}/api/v1/files/stuck"))
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let meta = MetaStore::connect(&db.url, 2).await.unwrap();
    let m = meta.clone();
    until("the job to be dead-lettered", Duration::from_secs(90), || {
        let m = m.clone();
        async move { counts(&m).await.get("dead") == Some(&1) }
    })
    .await;
    let dead = meta.jobs_in("dead", 10).await.unwrap();
    assert_eq!(dead[0].attempts, 3);
    let r = http
        .get(format!("{base}/api/v1/files/stuck"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == body, "reads keep working from staging");
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&cfg_down)
        .args(["transfer", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("dead {}", sha1_hex(&body))), "{text}");
    assert!(
        text.contains(&format!("dead-letter queue {}: 1", q.dead_letter_queue)),
        "{text}"
    );
    kill(worker);
    kill(server);
    // S3 is back: retry.
    let cfg_up = write_config(dir.path(), &db.url, &s3, &q, "");
    let out = Command::new(BIN)
        .arg("-c")
        .arg(&cfg_up)
        .args(["transfer", "retry"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued 1"));
    let worker = spawn(&cfg_up, &["transfer"]);
    let m = meta.clone();
    until("the retried job to finish", Duration::from_secs(60), || {
        let m = m.clone();
        async move { counts(&m).await.get("done") == Some(&1) }
    })
    .await;
    kill(worker);
    meta.close().await;
    db.cleanup().await;
}

/// Content deleted (and collected) while its transfer waits in the queue: nothing is
/// uploaded, nothing is resurrected, nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_while_queued() {
    let Some(db) = common::TestDb::new(Backend::MySql).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (s3, q) = (s3_config(), queue_config());
    let cfg = write_config(dir.path(), &db.url, &s3, &q, "");
    let (server, base) = serve(&cfg);
    let http = reqwest::Client::new();
    let token = signup(&http, &base).await;
    let body = payload(70_000, 9);
    http.put(format!("{base}/api/v1/files/brief"))
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let meta = MetaStore::connect(&db.url, 2).await.unwrap();
    let m = meta.clone();
    until("the job to be published", Duration::from_secs(30), || {
        let m = m.clone();
        async move { counts(&m).await.get("published") == Some(&1) }
    })
    .await;
    http.delete(format!("{base}/api/v1/files/brief"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let out = Command::new(BIN).arg("-c").arg(&cfg).arg("gc").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("collected 1"), "{out:?}");
    let worker = spawn(&cfg, &["transfer"]);
    let m = meta.clone();
    until("the job to be settled", Duration::from_secs(60), || {
        let m = m.clone();
        async move { counts(&m).await.get("done") == Some(&1) }
    })
    .await;
    kill(worker);
    kill(server);
    assert!(
        meta.content(&sha1_hex(&body)).await.unwrap().is_none(),
        "not resurrected"
    );
    let store = filestore::blob::s3::S3Store::new(&s3).await.unwrap();
    assert!(store.list_keys().await.unwrap().is_empty(), "nothing uploaded");
    assert_eq!(local_objects(&dir.path().join("data")), 0);
    let _ = std::io::stdout().flush();
    meta.close().await;
    db.cleanup().await;
}
