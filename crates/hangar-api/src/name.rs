//! Name rules for VMs and images (DNS labels, so `NAME.hangar` resolves)
//! and for guest login names.

/// Checks that `name` is a valid DNS label (RFC 1123): 1–63 characters of
/// lowercase letters, digits and `-`, not starting or ending with `-`.
/// Returns a message that says what is wrong and what would be accepted.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let rule =
        "use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit";
    if name.is_empty() {
        return Err(format!("{what} name is empty: {rule}"));
    }
    if name.len() > 63 {
        return Err(format!(
            "{what} name {name:?} is {} characters long: {rule}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("{what} name {name:?} contains {bad:?}: {rule}"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "{what} name {name:?} starts or ends with '-': {rule}"
        ));
    }
    Ok(())
}

/// Checks that `user` is a login name that can appear in the guest's
/// `/etc/passwd` and in a file name: 1-32 characters of lowercase letters,
/// digits, `_` and `-`, starting with a letter or `_` (Debian's
/// `useradd` default rule, without the trailing `$` of machine accounts).
pub fn validate_login_name(user: &str) -> Result<(), String> {
    let rule = "use 1-32 lowercase letters, digits, '_' or '-', starting with a letter or '_'";
    let first_ok = user
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = user
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if user.len() > 32 || !first_ok || !rest_ok {
        return Err(format!("login name {user:?} is not valid: {rule}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn accepts_dns_labels() {
        for n in ["dev", "a", "web-1", "0abc", &"x".repeat(63)] {
            assert!(validate_name("VM", n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_non_labels_with_reason() {
        assert!(validate_name("VM", "").unwrap_err().contains("empty"));
        assert!(validate_name("VM", "Dev").unwrap_err().contains("'D'"));
        assert!(validate_name("VM", "a_b").unwrap_err().contains("'_'"));
        assert!(validate_name("VM", "-a")
            .unwrap_err()
            .contains("starts or ends"));
        assert!(validate_name("VM", "a.b").unwrap_err().contains("'.'"));
        assert!(validate_name("VM", &"x".repeat(64))
            .unwrap_err()
            .contains("64"));
    }

    #[test]
    fn login_names_are_passwd_names_that_are_safe_in_a_file_name() {
        use super::validate_login_name;
        for ok in ["root", "dev", "_apt", "www-data", "user1", &"a".repeat(32)] {
            assert!(validate_login_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1000",
            "Dev",
            "a/b",
            "../x",
            "a.b",
            "a b",
            "-x",
            &"a".repeat(33),
        ] {
            let e = validate_login_name(bad).expect_err(bad);
            assert!(e.contains("login name"), "{e}");
        }
    }
}
