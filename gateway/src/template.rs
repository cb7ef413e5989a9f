//! Path templates of `google.api.http` rules: parsing and matching.
//!
//! The grammar is the one in `google/api/http.proto`:
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! A template is flattened into a list of segments; a variable is the range of segments it
//! covers (`{id}` is one `*` segment, `{name=shelves/*/books/*}` four). Matching walks the
//! request path once, so it costs a few string comparisons per segment and no allocation
//! beyond the captured values.

use std::fmt;

/// One flattened segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text.
    Literal(String),
    /// Exactly one non-empty path segment (`*`).
    Single,
    /// Any number of segments, only last (`**`).
    Multi,
}

/// A variable bound to a field path, covering `segments[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Field names from the request message down, e.g. `["product", "id"]`.
    pub field_path: Vec<String>,
    start: usize,
    end: usize,
}

impl Variable {
    /// The field path joined with dots, as written in the template.
    pub fn dotted(&self) -> String {
        self.field_path.join(".")
    }
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// Why a template is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path template {template:?}: {why}")]
pub struct TemplateError {
    template: String,
    why: &'static str,
}

impl PathTemplate {
    /// Parses `template`, e.g. `/v1/stock/{product_id}:restock`.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let err = |why| TemplateError {
            template: template.to_string(),
            why,
        };
        let rest = template
            .strip_prefix('/')
            .ok_or_else(|| err("must start with '/'"))?;
        let (path, verb) = split_verb(rest);
        if verb.is_some_and(|v| v.is_empty() || v.contains(['/', '{', '}'])) {
            return Err(err("bad custom verb"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut rest = path;
        loop {
            if let Some(after) = rest.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| err("unclosed '{'"))?;
                let inner = &after[..close];
                if inner.contains('{') {
                    return Err(err("nested variables"));
                }
                let (name, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let field_path: Vec<String> = name.split('.').map(str::to_string).collect();
                if field_path.iter().any(|f| !is_ident(f)) {
                    return Err(err("bad field path in variable"));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(segment(part).ok_or_else(|| err("bad segment in variable"))?);
                }
                variables.push(Variable {
                    field_path,
                    start,
                    end: segments.len(),
                });
                rest = &after[close + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                segments.push(segment(&rest[..end]).ok_or_else(|| err("bad segment"))?);
                rest = &rest[end..];
            }
            if rest.is_empty() {
                break;
            }
            rest = rest
                .strip_prefix('/')
                .ok_or_else(|| err("variable must be a whole segment"))?;
        }
        if let Some(pos) = segments.iter().position(|s| *s == Segment::Multi)
            && pos + 1 != segments.len()
        {
            return Err(err("'**' must be the last segment"));
        }
        Ok(Self {
            raw: template.to_string(),
            segments,
            variables,
            verb: verb.map(str::to_string),
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// Sort key: more specific templates first (custom verb, then more literal segments,
    /// then no `**`), so `/v1/products/by-name/{name}` wins over a hypothetical
    /// `/v1/products/{id=**}`.
    pub fn specificity(&self) -> (bool, usize, bool) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let multi = self.segments.contains(&Segment::Multi);
        (self.verb.is_some(), literals, !multi)
    }

    /// The template in OpenAPI form: every variable as `{field.path}`.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(v) = self.variables.iter().find(|v| v.start == i) {
                out.push('{');
                out.push_str(&v.dotted());
                out.push('}');
                i = v.end.max(i + 1);
            } else {
                match &self.segments[i] {
                    Segment::Literal(l) => out.push_str(l),
                    Segment::Single => out.push('*'),
                    Segment::Multi => out.push_str("**"),
                }
                i += 1;
            }
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// Matches a request path (without query). On success returns one percent-decoded
    /// value per variable, in [`PathTemplate::variables`] order.
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        // spans[k] = the parts matched by segment k.
        let mut spans = Vec::with_capacity(self.segments.len());
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(lit) => {
                    if parts.get(i) != Some(&lit.as_str()) {
                        return None;
                    }
                    spans.push((i, i + 1));
                    i += 1;
                }
                Segment::Single => {
                    if parts.get(i).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    spans.push((i, i + 1));
                    i += 1;
                }
                Segment::Multi => {
                    spans.push((i, parts.len()));
                    i = parts.len();
                }
            }
        }
        if i != parts.len() {
            return None;
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let from = spans.get(v.start)?.0;
            let to = spans.get(v.end.checked_sub(1)?)?.1;
            let single = v.end - v.start == 1 && self.segments[v.start] == Segment::Single;
            let mut value = String::new();
            for (n, part) in parts[from..to].iter().enumerate() {
                if n > 0 {
                    value.push('/');
                }
                // Multi-segment variables keep an encoded '/' encoded, per http.proto.
                value.push_str(&percent_decode(part, !single)?);
            }
            values.push(value);
        }
        Some(values)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits off a trailing `:verb` that is outside any `{...}` and after the last '/'.
fn split_verb(rest: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut last_slash = None;
    let mut last_colon = None;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => last_slash = Some(i),
            ':' if depth == 0 => last_colon = Some(i),
            _ => {}
        }
    }
    match last_colon {
        Some(c) if last_slash.is_none_or(|s| c > s) => (&rest[..c], Some(&rest[c + 1..])),
        _ => (rest, None),
    }
}

fn segment(text: &str) -> Option<Segment> {
    match text {
        "" => None,
        "*" => Some(Segment::Single),
        "**" => Some(Segment::Multi),
        lit if lit.contains(['{', '}', '*', ':']) => None,
        lit => Some(Segment::Literal(lit.to_string())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decodes `%XX` escapes; `None` for a bad escape or invalid UTF-8. With `keep_slash`, an
/// encoded '/' stays `%2F`.
pub fn percent_decode(text: &str, keep_slash: bool) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            // Two hex digits exactly: `from_str_radix` alone also takes a sign ("%+F").
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            let b = u8::from_str_radix(hex, 16).ok()?;
            if keep_slash && b == b'/' {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(b);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_variable_and_verb() {
        let t = PathTemplate::parse("/v1/stock/{product_id}:restock").unwrap();
        assert_eq!(t.verb(), Some("restock"));
        assert_eq!(t.variables()[0].field_path, vec!["product_id"]);
        assert_eq!(t.matches("/v1/stock/abc:restock"), Some(vec!["abc".into()]));
        assert_eq!(t.matches("/v1/stock/abc"), None);
        assert_eq!(t.matches("/v1/stock/abc:adjust"), None);
        assert_eq!(t.openapi_path(), "/v1/stock/{product_id}:restock");
    }

    #[test]
    fn verb_without_variables() {
        let t = PathTemplate::parse("/v1/products:batchGet").unwrap();
        assert_eq!(t.verb(), Some("batchGet"));
        assert_eq!(t.matches("/v1/products:batchGet"), Some(vec![]));
        assert_eq!(t.matches("/v1/products"), None);
    }

    #[test]
    fn nested_field_paths() {
        let t = PathTemplate::parse("/v1/products/{product.id}").unwrap();
        assert_eq!(t.variables()[0].field_path, vec!["product", "id"]);
        assert_eq!(
            t.matches("/v1/products/a%20b"),
            Some(vec!["a b".to_string()])
        );
        assert_eq!(t.matches("/v1/products/"), None);
        assert_eq!(t.matches("/v1/products/a/b"), None);
    }

    #[test]
    fn multi_segment_variables() {
        let t = PathTemplate::parse("/v1/{name=shelves/*/books/**}").unwrap();
        assert_eq!(
            t.matches("/v1/shelves/1/books/x/y%2Fz"),
            Some(vec!["shelves/1/books/x/y%2Fz".to_string()])
        );
        assert_eq!(t.matches("/v1/shelves/1/cds/x"), None);
        assert_eq!(t.openapi_path(), "/v1/{name}");
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "v1/x",
            "/v1/{id",
            "/v1/{a-b}",
            "/v1//x",
            "/v1/**/x",
            "/v1/x:",
            "/v1/{a={b}}",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn specificity_prefers_literals_and_verbs() {
        let by_name = PathTemplate::parse("/v1/products/by-name/{name}").unwrap();
        let by_id = PathTemplate::parse("/v1/products/{id}").unwrap();
        let verb = PathTemplate::parse("/v1/products:batchGet").unwrap();
        assert!(by_name.specificity() > by_id.specificity());
        assert!(verb.specificity() > by_name.specificity());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb", false).as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a%2Fb", true).as_deref(), Some("a%2Fb"));
        assert_eq!(percent_decode("%e2%82%ac", false).as_deref(), Some("€"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%ff", false), None);
    }

    /// Found by the `path_template` fuzz target: a sign is not a hex digit.
    #[test]
    fn an_escape_with_a_sign_is_refused() {
        assert_eq!(percent_decode("V%+F", false), None);
        assert_eq!(percent_decode("%-1", true), None);
        assert_eq!(percent_decode("%+0%41", false), None);
        assert_eq!(percent_decode("%0A", false).as_deref(), Some("\n"));
    }
}
