//! How each open file is handed to the kernel: cached (reads and writes come to the
//! mount, through the kernel's page cache) or passthrough (the kernel reads a file of the
//! disk cache itself, and the mount never sees those reads).
//!
//! The kernel keeps one mode per inode while files of it are open, and refuses an open
//! in the other mode with `EIO`. It also wants every passthrough open of an inode to name
//! the same backing file. So this tracks, per inode, the handles open in each mode and
//! the backing file the passthrough ones use:
//! - a read-only open of a content in the disk cache goes passthrough, unless the inode
//!   has cached handles open;
//! - any other read-only open of an inode with passthrough handles goes passthrough with
//!   `FOPEN_DIRECT_IO` on the same backing file: its reads then come to the mount (which
//!   serves the inode's current content), which the kernel allows in that mode;
//! - a writable open of an inode with passthrough handles is refused with `ETXTBSY`,
//!   the kernel's own answer to such conflicts: in that mode a shared mapping of the file
//!   would write to the disk cache's file, not to the mount.
//!
//! `B` is the kernel's handle on a backing file (fuser's `BackingId`, closed on drop).

use std::collections::HashMap;

/// How to answer an open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// A plain open: the mount serves reads and writes.
    Cached,
    /// Passthrough to the inode's backing file; with `direct`, reads and writes still
    /// come to the mount (`FOPEN_DIRECT_IO`).
    Passthrough { direct: bool },
    /// Refused with `ETXTBSY`.
    Busy,
}

struct Inode<B> {
    cached: usize,
    passthrough: usize,
    /// The SHA-1 of the content the backing file holds, and the backing file.
    backing: Option<(String, B)>,
}

/// Open handles per inode, by mode.
pub(crate) struct IoModes<B> {
    inodes: HashMap<u64, Inode<B>>,
    /// Inode and mode (passthrough or not) of each open handle.
    handles: HashMap<u64, (u64, bool)>,
}

impl<B> Default for IoModes<B> {
    fn default() -> Self {
        IoModes {
            inodes: HashMap::new(),
            handles: HashMap::new(),
        }
    }
}

impl<B> IoModes<B> {
    /// Decides how handle `fh` of inode `ino` opens. `content` is the SHA-1 of the disk
    /// cache's copy when this read-only handle could read it passthrough; `backing`
    /// registers that copy with the kernel (None if it cannot). Returns the choice and,
    /// for passthrough, the backing to name.
    pub(crate) fn open(
        &mut self,
        ino: u64,
        fh: u64,
        writable: bool,
        content: Option<&str>,
        backing: impl FnOnce() -> Option<B>,
    ) -> (Choice, Option<&B>) {
        let st = self.inodes.entry(ino).or_insert(Inode {
            cached: 0,
            passthrough: 0,
            backing: None,
        });
        let choice = if st.passthrough > 0 {
            if writable {
                return (Choice::Busy, None);
            }
            let same = matches!((&st.backing, content), (Some((have, _)), Some(want)) if have == want);
            Choice::Passthrough { direct: !same }
        } else {
            let registered = match (content, st.cached) {
                (Some(sha1), 0) => backing().map(|b| st.backing = Some((sha1.to_owned(), b))),
                _ => None,
            };
            match registered {
                Some(()) => Choice::Passthrough { direct: false },
                None => Choice::Cached,
            }
        };
        let through = matches!(choice, Choice::Passthrough { .. });
        if through {
            st.passthrough += 1;
        } else {
            st.cached += 1;
        }
        self.handles.insert(fh, (ino, through));
        (choice, st.backing.as_ref().filter(|_| through).map(|(_, b)| b))
    }

    /// Records a handle opened by create (always cached).
    pub(crate) fn created(&mut self, ino: u64, fh: u64) {
        let _ = self.open(ino, fh, false, None, || None);
    }

    /// Handle `fh` is released; returns the backing file to close once no passthrough
    /// handle of its inode is left.
    pub(crate) fn release(&mut self, fh: u64) -> Option<B> {
        let (ino, through) = self.handles.remove(&fh)?;
        let st = self.inodes.get_mut(&ino)?;
        if through {
            st.passthrough -= 1;
        } else {
            st.cached -= 1;
        }
        let closed = if st.passthrough == 0 {
            st.backing.take().map(|(_, b)| b)
        } else {
            None
        };
        if st.cached == 0 && st.passthrough == 0 {
            self.inodes.remove(&ino);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_never_mix_on_an_inode() {
        let mut m: IoModes<u32> = IoModes::default();
        let mut made = 0;
        let mut reg = || {
            made += 1;
            Some(made)
        };
        // A cached content opened read-only goes passthrough, with one backing.
        assert_eq!(
            m.open(7, 1, false, Some("aa"), &mut reg),
            (Choice::Passthrough { direct: false }, Some(&1))
        );
        assert_eq!(
            m.open(7, 2, false, Some("aa"), &mut reg),
            (Choice::Passthrough { direct: false }, Some(&1))
        );
        // Not in the cache (or another content): still passthrough mode, but direct.
        assert_eq!(
            m.open(7, 3, false, None, &mut reg),
            (Choice::Passthrough { direct: true }, Some(&1))
        );
        assert_eq!(
            m.open(7, 4, false, Some("bb"), &mut reg),
            (Choice::Passthrough { direct: true }, Some(&1))
        );
        // A writer is refused while any of them is open.
        assert_eq!(m.open(7, 5, true, None, &mut reg).0, Choice::Busy);
        for fh in [1, 2, 3] {
            assert_eq!(m.release(fh), None);
        }
        assert_eq!(m.release(4), Some(1), "the last passthrough handle closes the backing");
        assert_eq!(m.release(5), None, "a refused open was never recorded");
        // Now a writer opens cached, and a reader of a cached content must follow it.
        assert_eq!(m.open(7, 6, true, None, &mut reg).0, Choice::Cached);
        assert_eq!(m.open(7, 7, false, Some("aa"), &mut reg).0, Choice::Cached);
        m.release(6);
        m.release(7);
        // Registration can fail: cached then.
        assert_eq!(m.open(8, 8, false, Some("aa"), || None).0, Choice::Cached);
        m.created(9, 9);
        assert_eq!(m.open(9, 10, false, Some("cc"), &mut reg).0, Choice::Cached);
        m.release(8);
        m.release(9);
        m.release(10);
        assert!(m.inodes.is_empty() && m.handles.is_empty());
        assert_eq!(made, 1);
    }
}
