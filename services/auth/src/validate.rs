//! Validation of user-supplied account fields. Every error names its field, so clients
//! (and the gateway's REST users) can point at the bad input.

use crate::error::{Error, Result};

pub const MAX_EMAIL_LEN: usize = 254;
pub const MIN_PASSWORD_LEN: usize = 8;
/// Argon2 accepts anything, but hashing megabytes per request is a cheap DoS.
pub const MAX_PASSWORD_LEN: usize = 1024;
pub const MAX_DISPLAY_NAME_LEN: usize = 100;
/// Service identities live here; people cannot register addresses in it.
pub const RESERVED_DOMAIN: &str = "services.stockmesh.internal";

/// The canonical form of an email (trimmed, lower-case), used for storage, lookup and
/// throttling alike, so `Bob@X.com ` and `bob@x.com` are one account.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// A normalised, plausible email address: one `@`, a non-empty local part, a domain with
/// a dot, no spaces, at most 254 characters.
pub fn email(raw: &str) -> Result<String> {
    let bad = |why: &str| Err(Error::invalid("email", why));
    // Before any copy is made: a megabyte "email" costs nothing more than a short one.
    if raw.trim().len() > MAX_EMAIL_LEN {
        return bad("must be at most 254 bytes");
    }
    let email = normalize_email(raw);
    if email.is_empty() {
        return bad("is required");
    }
    if email.len() > MAX_EMAIL_LEN {
        return bad("must be at most 254 bytes");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain spaces");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("must contain '@'");
    };
    if domain.contains('@') {
        return bad("must contain exactly one '@'");
    }
    if local.is_empty() {
        return bad("needs a name before '@'");
    }
    if domain.is_empty()
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return bad("needs a domain with a dot after '@', like example.com");
    }
    Ok(email)
}

/// Whether `email` (normalised) is in the service identities' domain.
pub fn is_service_email(email: &str) -> bool {
    email
        .rsplit_once('@')
        .is_some_and(|(_, d)| d == RESERVED_DOMAIN)
}

/// An email that a person may claim: valid and outside the service identities' domain.
pub fn personal_email(raw: &str) -> Result<String> {
    let email = email(raw)?;
    if is_service_email(&email) {
        return Err(Error::invalid(
            "email",
            format!("the domain {RESERVED_DOMAIN} is reserved for service identities"),
        ));
    }
    Ok(email)
}

/// A new password: 8 to 1024 characters.
pub fn new_password(raw: &str) -> Result<()> {
    let n = raw.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(Error::invalid("password", "must be at least 8 characters"));
    }
    if raw.len() > MAX_PASSWORD_LEN {
        return Err(Error::invalid("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

/// A display name: required, at most 100 characters, trimmed.
pub fn display_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Error::invalid("display_name", "is required"));
    }
    if name.chars().count() > MAX_DISPLAY_NAME_LEN {
        return Err(Error::invalid(
            "display_name",
            "must be at most 100 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<impl std::fmt::Debug>) -> &'static str {
        match r {
            Err(Error::InvalidField { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(email("  Bob@Example.COM ").unwrap(), "bob@example.com");
        for bad in [
            "",
            "bob",
            "@example.com",
            "bob@",
            "bob@localhost",
            "a@b@c.com",
            "bo b@x.com",
            "bob@.com",
            "bob@x.com.",
            "bob@x..com",
        ] {
            assert_eq!(field_of(email(bad)), "email", "{bad:?} must be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(field_of(email(&long)), "email");
        assert_eq!(
            field_of(personal_email("orders@services.stockmesh.internal")),
            "email"
        );
    }

    #[test]
    fn passwords_and_names() {
        assert_eq!(field_of(new_password("short")), "password");
        assert_eq!(field_of(new_password(&"x".repeat(1025))), "password");
        assert!(new_password("12345678").is_ok());
        assert_eq!(field_of(display_name("   ")), "display_name");
        assert_eq!(field_of(display_name(&"n".repeat(101))), "display_name");
        assert_eq!(display_name(" Ann ").unwrap(), "Ann");
    }
}
