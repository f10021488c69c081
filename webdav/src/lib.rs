//! WebDAV adapter (work in progress).
