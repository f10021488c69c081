//! The `filestore` binary: parses the command line and hands over to the library.

mod cli;
mod cli_mount;

fn main() -> std::process::ExitCode {
    // argon2id allocates 19 MiB per password check; glibc keeps such blocks in per-thread
    // arenas after they are freed, so a burst of sign-ins left the server at gigabytes of
    // resident memory. Allocations of 4 MiB and more are mmapped and returned at free
    // (I/O buffers stay below that, so they keep coming from the heap).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    cli::main()
}
