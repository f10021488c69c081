//! Validation of entry names and paths of the per-user tree.

/// Why a name or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name `{0}` is reserved")]
    Reserved(String),
    #[error("name is longer than 255 bytes")]
    TooLong,
    #[error("name contains `/` or a NUL byte")]
    BadChar,
    #[error("path must name an entry below the root")]
    Root,
}

/// The longest name, in bytes (the Linux NAME_MAX).
pub const MAX_NAME: usize = 255;

/// Checks one path component: non-empty UTF-8 (guaranteed by `&str`), not `.` or `..`,
/// no `/` or NUL, at most 255 bytes.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved(name.to_string()));
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    if name.bytes().any(|b| b == b'/' || b == 0) {
        return Err(NameError::BadChar);
    }
    Ok(())
}

/// Splits a slash-separated path into validated components. Leading, trailing and repeated
/// slashes are ignored; `.` and `..` are refused rather than resolved, so no path can climb
/// out of the user's tree.
pub fn split_path(path: &str) -> Result<Vec<&str>, NameError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for p in &parts {
        validate_name(p)?;
    }
    Ok(parts)
}

/// The last component of a client-supplied file name, as browsers and the seed's clients
/// send it (some send a full Windows or Unix path).
pub fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(validate_name(".."), Err(NameError::Reserved(_))));
        assert!(matches!(validate_name("."), Err(NameError::Reserved(_))));
        assert_eq!(validate_name("a/b"), Err(NameError::BadChar));
        assert_eq!(validate_name("a\0b"), Err(NameError::BadChar));
        assert_eq!(validate_name(&"x".repeat(256)), Err(NameError::TooLong));
        // 255 bytes of multi-byte characters is fine; 256 is not.
        assert!(validate_name(&"é".repeat(127)).is_ok());
        assert_eq!(
            validate_name(&format!("{}xx", "é".repeat(127))),
            Err(NameError::TooLong)
        );
        assert!(validate_name("...").is_ok());
        assert!(validate_name(" spaced name .txt").is_ok());
    }

    #[test]
    fn paths() {
        assert_eq!(split_path("/a//b/").unwrap(), vec!["a", "b"]);
        assert_eq!(split_path("").unwrap(), Vec::<&str>::new());
        assert!(split_path("/a/../b").is_err());
        assert!(split_path("./a").is_err());
        assert_eq!(base_name("C:\\Users\\me\\x.txt"), "x.txt");
        assert_eq!(base_name("../../etc/passwd"), "passwd");
    }
}
