//! What counts as a valid name: principal slugs and operation ids.
//!
//! Pure functions, no I/O. Every error message names the offending value.

/// Checks a spoke or client id: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn check_slug(id: &str) -> Result<(), String> {
    let bytes = id.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid id {id:?}: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        ))
    }
}

/// Checks one segment of a namespace or a name: `[A-Za-z][A-Za-z0-9_-]*`.
pub fn check_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks a dot-separated namespace whose every segment is valid.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    if !namespace.is_empty() && namespace.split('.').all(check_segment) {
        Ok(())
    } else {
        Err(format!(
            "invalid namespace {namespace:?}: dot-separated segments, each [A-Za-z][A-Za-z0-9_-]*"
        ))
    }
}

/// Checks an operation name: one segment.
pub fn check_name(name: &str) -> Result<(), String> {
    if check_segment(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid operation name {name:?}: one segment, [A-Za-z][A-Za-z0-9_-]*"
        ))
    }
}

/// Splits an operation id into namespace and name at its last dot.
pub fn split_operation_id(id: &str) -> Option<(&str, &str)> {
    let (namespace, name) = id.rsplit_once('.')?;
    (check_namespace(namespace).is_ok() && check_segment(name)).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["devbox", "a", "0-x", &"a".repeat(63)] {
            assert!(check_slug(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "Dev", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn operation_ids() {
        assert_eq!(split_operation_id("dev.fs.read"), Some(("dev.fs", "read")));
        assert_eq!(split_operation_id("read"), None);
        assert_eq!(split_operation_id("dev..read"), None);
        assert_eq!(split_operation_id("dev.1x"), None);
        assert!(check_namespace("a.b_c.d-e").is_ok());
        assert!(check_namespace("a.").is_err());
    }
}
