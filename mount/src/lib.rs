//! FUSE adapter (work in progress).
