//! Field rules of the catalog, as pure functions: each takes the field's name (as the
//! client spelled the request, e.g. `product.price_cents` in an update) so its error names
//! exactly what to fix, and returns the normalised value to store.
//!
//! Names and skus are trimmed before they are stored and compared, so `"Widget "` and
//! `"Widget"` cannot both exist; descriptions are kept as sent.

use crate::error::{Error, Result};

pub const SKU_MAX: usize = 64;
pub const NAME_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 10_000;
pub const EMAIL_MAX: usize = 254;
pub const PHONE_MAX: usize = 32;
pub const UNIT_MAX: usize = 32;
pub const ID_MAX: usize = 128;
/// The currency of a product created without one (API.md).
pub const DEFAULT_CURRENCY: &str = "USD";

fn chars(value: &str) -> usize {
    value.chars().count()
}

/// A required single-line text: trimmed, non-empty, at most `max` characters, no control
/// characters.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "required"));
    }
    optional_text(field, value, max)
}

/// An optional single-line text: trimmed, at most `max` characters, no control characters.
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if chars(value) > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_string())
}

/// A stock keeping unit: required, at most [`SKU_MAX`] characters, no whitespace.
pub fn sku(field: &str, value: &str) -> Result<String> {
    let value = required_text(field, value, SKU_MAX)?;
    if value.chars().any(char::is_whitespace) {
        return Err(Error::invalid(field, "must not contain whitespace"));
    }
    Ok(value)
}

/// A display name of a product, supplier or variable.
pub fn name(field: &str, value: &str) -> Result<String> {
    required_text(field, value, NAME_MAX)
}

/// Free text; may span lines.
pub fn description(field: &str, value: &str) -> Result<String> {
    if chars(value) > DESCRIPTION_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {DESCRIPTION_MAX} characters"),
        ));
    }
    Ok(value.to_string())
}

pub fn price_cents(field: &str, value: i64) -> Result<i64> {
    if value < 0 {
        return Err(Error::invalid(field, "must be ≥ 0"));
    }
    Ok(value)
}

/// An ISO 4217 alphabetic code (three upper-case ASCII letters); empty means
/// [`DEFAULT_CURRENCY`].
pub fn currency(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Ok(DEFAULT_CURRENCY.to_string());
    }
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(value.to_string())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "must be an ISO 4217 code of three upper-case letters, e.g. \"USD\"; got {value:?}"
            ),
        ))
    }
}

/// An optional contact email: empty, or `local@domain.tld` without whitespace.
///
/// Deliberately shallow (RFC 5322 allows far more): enough to catch typos, not a
/// deliverability check.
pub fn email(field: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    if value.len() > EMAIL_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {EMAIL_MAX} bytes"),
        ));
    }
    let bad = |why: &str| Err(Error::invalid(field, why.to_string()));
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain whitespace");
    }
    let Some((local, domain)) = value.split_once('@') else {
        return bad("must contain '@'");
    };
    if local.is_empty() || domain.contains('@') {
        return bad("must look like name@example.com");
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return bad("must have a domain like example.com after '@'");
    }
    Ok(value.to_string())
}

/// An optional phone number: digits with the usual separators (space, `-`, `.`, `(`,
/// `)`), an optional leading `+`, and between 5 and 20 digits.
pub fn phone(field: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    if chars(value) > PHONE_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {PHONE_MAX} characters"),
        ));
    }
    let body = value.strip_prefix('+').unwrap_or(value);
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
    {
        return Err(Error::invalid(
            field,
            "may contain only digits, spaces, '-', '.', '(', ')' and a leading '+'",
        ));
    }
    let digits = body.chars().filter(char::is_ascii_digit).count();
    if !(5..=20).contains(&digits) {
        return Err(Error::invalid(field, "must have between 5 and 20 digits"));
    }
    Ok(value.to_string())
}

/// A unit of measure, e.g. "°C"; may be empty for dimensionless quantities.
pub fn unit(field: &str, value: &str) -> Result<String> {
    optional_text(field, value, UNIT_MAX)
}

/// The id of a resource named in a request. Unknown ids are NOT_FOUND later; only empty or
/// absurdly long ones are refused here.
pub fn id<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        return Err(Error::invalid(field, "required"));
    }
    if value.len() > ID_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {ID_MAX} bytes"),
        ));
    }
    Ok(value)
}

/// Escapes `%`, `_` and `\` so `text` matches itself inside a `LIKE … ESCAPE '\'` pattern.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn names_and_skus() {
        assert_eq!(name("name", "  Widget ").unwrap(), "Widget");
        assert_eq!(msg(name("name", "   ")), "name: required");
        assert!(msg(name("name", &"x".repeat(NAME_MAX + 1))).starts_with("name: must be at most"));
        assert!(msg(name("name", "a\u{0}b")).contains("control"));
        assert_eq!(sku("sku", " AB-1 ").unwrap(), "AB-1");
        assert_eq!(
            msg(sku("product.sku", "A B")),
            "product.sku: must not contain whitespace"
        );
    }

    #[test]
    fn money() {
        assert_eq!(price_cents("price_cents", 0).unwrap(), 0);
        assert_eq!(
            msg(price_cents("price_cents", -1)),
            "price_cents: must be ≥ 0"
        );
        assert_eq!(currency("currency", "").unwrap(), "USD");
        assert_eq!(currency("currency", "EUR").unwrap(), "EUR");
        for bad in ["usd", "US", "USDD", "U$D", "ÉUR"] {
            assert!(
                msg(currency("currency", bad)).starts_with("currency: "),
                "{bad}"
            );
        }
    }

    #[test]
    fn contacts() {
        assert_eq!(email("contact_email", "").unwrap(), "");
        assert_eq!(email("contact_email", " a@b.co ").unwrap(), "a@b.co");
        for bad in [
            "a", "@b.co", "a@b", "a@@b.co", "a@b..co", "a b@c.de", "a@.co",
        ] {
            assert!(email("contact_email", bad).is_err(), "{bad}");
        }
        assert_eq!(
            phone("phone", "+1 (555) 010-9999").unwrap(),
            "+1 (555) 010-9999"
        );
        assert_eq!(phone("phone", "").unwrap(), "");
        for bad in ["12", "call me", "1+2345678", &"1".repeat(33)] {
            assert!(phone("phone", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_and_like() {
        assert_eq!(msg(id("id", "")), "id: required");
        assert!(id("id", &"a".repeat(ID_MAX + 1)).is_err());
        assert_eq!(escape_like(r"50%_off\x"), r"50\%\_off\\x");
    }
}
