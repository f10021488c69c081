//! Conformance: Debian's `litmus` (basic, copymove, props, locks, http: 104 tests)
//! against the in-memory server on a loopback port. Every test must pass. litmus
//! must be installed (`apt-get install -y litmus`); its absence fails this test.

use std::process::Stdio;

use filestore_webdav::testing::{serve, TestUser};
use tokio::net::TcpListener;

/// (suite, tests run, passed, failed) from litmus's summary lines, e.g.
/// "<- summary for `basic': of 16 tests run: 16 passed, 0 failed. 100.0%".
fn summaries(out: &str) -> Vec<(String, u32, u32, u32)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("<- summary for `")?;
            let (suite, rest) = rest.split_once("': of ")?;
            let (run, rest) = rest.split_once(" tests run: ")?;
            let (passed, rest) = rest.split_once(" passed, ")?;
            let (failed, _) = rest.split_once(" failed")?;
            Some((
                suite.to_owned(),
                run.parse().ok()?,
                passed.parse().ok()?,
                failed.parse().ok()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litmus_passes_every_test() {
    let installed = std::process::Command::new("litmus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(installed, "litmus is not installed: run `apt-get install -y litmus`");
    let user = TestUser::new("litmus", "litmus");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(serve(listener, "/dav", vec![user]));

    // litmus writes debug.log into its working directory.
    let dir = std::env::temp_dir().join(format!("filestore-litmus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = tokio::process::Command::new("litmus")
        .args(["-k", &format!("http://{addr}/dav/"), "litmus", "litmus"])
        .current_dir(&dir)
        .output()
        .await
        .expect("run litmus");
    server.abort();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);

    let s = summaries(&text);
    for (suite, run, passed, failed) in &s {
        println!("litmus {suite}: {run} run, {passed} passed, {failed} failed");
    }
    let suites: Vec<&str> = s.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(suites, ["basic", "copymove", "props", "locks", "http"], "{text}");
    let total: u32 = s.iter().map(|x| x.2).sum();
    assert!(s.iter().all(|x| x.3 == 0 && x.1 == x.2), "{text}");
    assert_eq!(total, 104, "{text}");
}
