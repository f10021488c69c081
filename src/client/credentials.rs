//! Where `filestore login` keeps the token: `credentials.toml` in the user's config dir
//! (`FILESTORE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/filestore`, else
//! `~/.config/filestore`), readable by the user only.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub server: String,
    pub user: String,
    pub token: String,
    pub expires: String,
}

pub fn config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FILESTORE_CONFIG_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("filestore"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config").join("filestore"))
}

fn path() -> std::io::Result<PathBuf> {
    config_dir()
        .map(|d| d.join("credentials.toml"))
        .ok_or_else(|| std::io::Error::other("no config dir: set FILESTORE_CONFIG_DIR or HOME"))
}

impl Credentials {
    pub fn load() -> std::io::Result<Option<Credentials>> {
        let p = path()?;
        match std::fs::read_to_string(&p) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the file with mode 0600 (created so, never widened), atomically.
    pub fn save(&self) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let p = path()?;
        let dir = p.parent().expect("file in a dir");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let tmp = dir.join(".credentials.toml.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(toml::to_string(self).map_err(std::io::Error::other)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        Ok(p)
    }

    pub fn remove() -> std::io::Result<()> {
        match std::fs::remove_file(path()?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
