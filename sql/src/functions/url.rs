//! The URL functions: `URL_ENCODE_PARAM` and `URL_DECODE_PARAM` in the
//! `application/x-www-form-urlencoded` convention, and the `URL_EXTRACT_*` functions, which
//! take a URI apart as Java's `java.net.URI` does (RFC 2396/3986: the parts as written, then
//! percent-decoded). A string that is not a URI is an error: the row's result is null and the
//! processing log says why.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Builder, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::TypeSignature;

use super::udf::{INT, STRING, Scalar, function, string_at, strings};

/// A URI's parts as written (still percent-encoded); a part that is absent is `None`.
#[derive(Debug, Default, PartialEq, Eq)]
struct UriParts<'u> {
    scheme: Option<&'u str>,
    host: Option<&'u str>,
    port: Option<i32>,
    path: Option<&'u str>,
    query: Option<&'u str>,
    fragment: Option<&'u str>,
}

/// Whether `c` may appear in a URI unescaped: RFC 3986's unreserved and reserved characters,
/// `%` (checked separately), and, as Java's `URI` allows, any non-ASCII character that is not a
/// control or a space.
fn uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

/// Whether every `%` in `text` is followed by two hex digits.
fn percent_escapes_complete(text: &str) -> bool {
    let bytes = text.as_bytes();
    let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
    text.match_indices('%')
        .all(|(i, _)| hex(i + 1) && hex(i + 2))
}

/// Takes `url` apart (RFC 3986, appendix B), or says why it is not a URI.
fn parse(url: &str) -> Result<UriParts<'_>, String> {
    let invalid = |why: &str| format!("URL input has invalid syntax: {url} ({why})");
    if let Some(bad) = url.chars().find(|&c| !uri_char(c)) {
        return Err(invalid(&format!("the character {bad:?} must be escaped")));
    }
    if !percent_escapes_complete(url) {
        return Err(invalid("a % is not followed by two hex digits"));
    }
    let mut parts = UriParts::default();
    let (rest, fragment) = match url.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (url, None),
    };
    parts.fragment = fragment;
    let scheme_end = rest
        .find(':')
        .filter(|&at| rest[..at].find(['/', '?']).is_none());
    let rest = match scheme_end {
        Some(at) => {
            let scheme = &rest[..at];
            let valid = scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if !valid {
                return Err(invalid("the scheme is not valid"));
            }
            parts.scheme = Some(scheme);
            &rest[at + 1..]
        }
        None => rest,
    };
    // An opaque URI (`mailto:a@b`) has a scheme and a part that does not start with a slash:
    // Java gives it no path, query or host.
    if parts.scheme.is_some() && !rest.starts_with('/') {
        if rest.is_empty() {
            return Err(invalid("nothing follows the scheme"));
        }
        return Ok(parts);
    }
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    parts.query = query;
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            server_authority(&after[..end], &mut parts);
            &after[end..]
        }
        None => rest,
    };
    parts.path = Some(path);
    Ok(parts)
}

/// The host and port of a server-based authority (`user@host:port`); an authority that is not
/// one (a port that is not a number) leaves both out, as Java's `URI` does.
fn server_authority<'u>(authority: &'u str, parts: &mut UriParts<'u>) {
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    // An IPv6 literal keeps its colons inside the brackets.
    let port_at = match host_port.rfind(']') {
        Some(close) => host_port[close..].find(':').map(|at| close + at),
        None => host_port.rfind(':'),
    };
    let (host, port) = match port_at {
        Some(at) => (&host_port[..at], &host_port[at + 1..]),
        None => (host_port, ""),
    };
    if port.is_empty() {
        parts.host = (!host.is_empty()).then_some(host);
        return;
    }
    if let Ok(port) = port.parse::<i32>() {
        parts.host = (!host.is_empty()).then_some(host);
        parts.port = Some(port);
    }
}

/// A percent-encoded part, decoded as UTF-8 (invalid sequences replaced, as Java's `URI` does).
fn decoded(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// `URL_DECODE_PARAM`: `+` is a space and `%xx` a byte, as Java's `URLDecoder` reads them.
fn decode_param(value: &str) -> Result<String, String> {
    if !percent_escapes_complete(value) {
        return Err(format!(
            "URLDecoder: Illegal hex characters in escape (%) pattern: {value}"
        ));
    }
    Ok(form_urlencoded::parse(format!("k={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default())
}

/// `URL_ENCODE_PARAM`: every byte but letters, digits and `-_.*` escaped, a space as `+`.
fn encode_param(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A text function of one text argument that may fail.
fn text_to_text(
    args: &[ArrayRef],
    rows: usize,
    f: impl Fn(&str) -> Result<Option<String>, String>,
) -> Result<ArrayRef, String> {
    let input = strings(&args[0])?;
    let mut out = StringBuilder::new();
    for i in 0..rows {
        match string_at(&input, i).map(&f).transpose()?.flatten() {
            Some(text) => out.append_value(text),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

fn url_decode_param(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_text(args, rows, |v| decode_param(v).map(Some))
}

fn url_encode_param(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_text(args, rows, |v| Ok(Some(encode_param(v))))
}

fn url_extract_fragment(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_text(args, rows, |u| Ok(parse(u)?.fragment.map(decoded)))
}

fn url_extract_host(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_text(args, rows, |u| Ok(parse(u)?.host.map(str::to_string)))
}

fn url_extract_path(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_text(args, rows, |u| Ok(parse(u)?.path.map(decoded)))
}

fn url_extract_protocol(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_text(args, rows, |u| Ok(parse(u)?.scheme.map(str::to_string)))
}

fn url_extract_query(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    text_to_text(args, rows, |u| Ok(parse(u)?.query.map(decoded)))
}

/// `URL_EXTRACT_PARAMETER(url, name)`: the decoded value of the first parameter of the decoded
/// query called `name` (empty for one without `=`), as ksqlDB splits it.
fn url_extract_parameter(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (urls, names) = (strings(&args[0])?, strings(&args[1])?);
    let mut out = StringBuilder::new();
    for i in 0..rows {
        let (Some(url), Some(name)) = (string_at(&urls, i), string_at(&names, i)) else {
            out.append_null();
            continue;
        };
        let query = parse(url)?.query.map(decoded);
        let value = query.as_deref().and_then(|query| {
            query
                .split('&')
                .find_map(|param| match param.split_once('=') {
                    Some((key, value)) if key == name => Some(value.to_string()),
                    None if param == name => Some(String::new()),
                    _ => None,
                })
        });
        match value {
            Some(value) => out.append_value(value),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `URL_EXTRACT_PORT(url)`: the explicit port, as an `INT`.
fn url_extract_port(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let urls = strings(&args[0])?;
    let mut out = Int32Builder::new();
    for i in 0..rows {
        match string_at(&urls, i) {
            Some(url) => out.append_option(parse(url)?.port),
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// One text argument.
fn text1() -> TypeSignature {
    TypeSignature::Exact(vec![DataType::Utf8])
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![
        function("URL_DECODE_PARAM", text1(), STRING, url_decode_param),
        function("URL_ENCODE_PARAM", text1(), STRING, url_encode_param),
        function(
            "URL_EXTRACT_FRAGMENT",
            text1(),
            STRING,
            url_extract_fragment,
        ),
        function("URL_EXTRACT_HOST", text1(), STRING, url_extract_host),
        function(
            "URL_EXTRACT_PARAMETER",
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
            STRING,
            url_extract_parameter,
        ),
        function("URL_EXTRACT_PATH", text1(), STRING, url_extract_path),
        function("URL_EXTRACT_PORT", text1(), INT, url_extract_port),
        function(
            "URL_EXTRACT_PROTOCOL",
            text1(),
            STRING,
            url_extract_protocol,
        ),
        function("URL_EXTRACT_QUERY", text1(), STRING, url_extract_query),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_comes_apart_as_javas_uri_takes_it() {
        let parts =
            parse("http://user@test.com:8080/path/to%20x?a=foo%20bar&b=baz#frag%20space").unwrap();
        assert_eq!(parts.scheme, Some("http"));
        assert_eq!(parts.host, Some("test.com"));
        assert_eq!(parts.port, Some(8080));
        assert_eq!(parts.path.map(decoded).as_deref(), Some("/path/to x"));
        assert_eq!(parts.query.map(decoded).as_deref(), Some("a=foo bar&b=baz"));
        assert_eq!(parts.fragment.map(decoded).as_deref(), Some("frag space"));
        // No port, no path: an empty path, not none.
        let bare = parse("http://test.com").unwrap();
        assert_eq!((bare.port, bare.path), (None, Some("")));
        // IPv6 literals keep their brackets; a relative reference has no host.
        assert_eq!(parse("http://[::1]:9/").unwrap().host, Some("[::1]"));
        assert_eq!(parse("/just/a/path?q").unwrap().host, None);
        // An opaque URI has a scheme only.
        let mail = parse("mailto:someone@example.com").unwrap();
        assert_eq!(
            (mail.scheme, mail.path, mail.host),
            (Some("mailto"), None, None)
        );
    }

    #[test]
    fn strings_that_are_not_uris_are_refused() {
        for bad in [
            "http://a b.com",
            "http://x/%zz",
            "1http://x",
            "http://x/<y>",
            ":",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters_are_form_encoded() {
        assert_eq!(encode_param("url encoded/ü*"), "url+encoded%2F%C3%BC*");
        assert_eq!(
            decode_param("url+encoded%2F%C3%BC").unwrap(),
            "url encoded/ü"
        );
        assert!(decode_param("100%").is_err());
    }
}
