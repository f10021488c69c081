//! Progress reporting: a bar with rate and ETA on a terminal, plain lines otherwise (logs,
//! scripts, tests read those).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: AtomicU64,
    /// Last tenth reported in plain mode.
    reported: AtomicU64,
    started: std::time::Instant,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b
        });
        Progress {
            inner: Arc::new(Inner {
                bar,
                label: label.to_string(),
                total,
                done: AtomicU64::new(0),
                reported: AtomicU64::new(0),
                started: std::time::Instant::now(),
            }),
        }
    }

    /// A line about what is happening (printed above the bar, or as is).
    pub fn note(&self, msg: &str) {
        match &self.inner.bar {
            Some(b) => b.println(format!("{}: {msg}", self.inner.label)),
            None => eprintln!("{}: {msg}", self.inner.label),
        }
    }

    pub fn set(&self, done: u64) {
        self.inner.done.store(done, Ordering::Relaxed);
        self.tick();
    }

    pub fn add(&self, n: u64) {
        self.inner.done.fetch_add(n, Ordering::Relaxed);
        self.tick();
    }

    fn tick(&self) {
        let done = self.inner.done.load(Ordering::Relaxed);
        match &self.inner.bar {
            Some(b) => b.set_position(done),
            None => {
                let tenth = (done * 10).checked_div(self.inner.total).unwrap_or(10);
                if tenth > self.inner.reported.swap(tenth, Ordering::Relaxed) {
                    eprintln!(
                        "{}: {}% of {} bytes, {}",
                        self.inner.label,
                        tenth * 10,
                        self.inner.total,
                        self.rate(done)
                    );
                }
            }
        }
    }

    fn rate(&self, done: u64) -> String {
        let secs = self.inner.started.elapsed().as_secs_f64().max(1e-3);
        format!("{:.1} MiB/s", done as f64 / secs / (1 << 20) as f64)
    }

    pub fn finish(&self, msg: &str) {
        match &self.inner.bar {
            Some(b) => b.finish_with_message(format!("{} {msg}", self.inner.label)),
            None => eprintln!("{}: {msg}", self.inner.label),
        }
    }
}
