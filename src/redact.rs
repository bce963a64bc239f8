//! Text made safe to print or store: credentials in URLs redacted, control characters from
//! peers escaped.
//!
//! Alert URLs may carry secrets (`https://user:pass@host/…`, `?token=…`); anything that
//! prints or stores a URL, or an error message that may quote one, goes through [`url`] or
//! [`urls_in`]. Text a peer chose (AE titles, Series Description) goes through
//! [`printable`] before it reaches a log line or a terminal. This module decides nothing
//! else; callers choose what to pass through it.

/// Shown in place of a secret.
pub const MASK: &str = "***";

/// `u` with its user information and every query value replaced by [`MASK`].
pub fn url(u: &str) -> String {
    let Some(sep) = u.find("://") else {
        return u.to_owned();
    };
    let (scheme, rest) = (&u[..sep + 3], &u[sep + 3..]);
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("{MASK}@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let (before_fragment, fragment) = match tail.find('#') {
        Some(h) => tail.split_at(h),
        None => (tail, ""),
    };
    let tail = match before_fragment.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !v.is_empty() => format!("{k}={MASK}"),
                    Some((k, _)) => format!("{k}="),
                    None if kv.is_empty() => String::new(),
                    None => MASK.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => before_fragment.to_owned(),
    };
    format!("{scheme}{host}{tail}{fragment}")
}

/// `text` with every URL in it passed through [`url`] (a URL runs from its scheme to the
/// next whitespace or quote).
pub fn urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(rest.len(), |i| sep + i);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `s` with control characters (newline, escape, DEL, C1…) written as escapes, so that text
/// a peer chose cannot forge log lines or drive a terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_and_query_values_are_masked() {
        assert_eq!(
            url("https://alice:s3cret@hooks.example.org:8443/a/b?token=XYZ&x=1#frag"),
            "https://***@hooks.example.org:8443/a/b?token=***&x=***#frag"
        );
        assert_eq!(url("http://127.0.0.1:9/hook"), "http://127.0.0.1:9/hook");
        assert_eq!(url("http://h/p?bare"), "http://h/p?***");
        assert_eq!(url("not a url"), "not a url");
        assert_eq!(url("http://tok@h"), "http://***@h");
    }

    #[test]
    fn urls_inside_error_text_are_masked_and_the_rest_kept() {
        let e =
            "http://u:p@127.0.0.1:9/hook?auth=abc: Connection Failed: refused (\"https://x:y@z/\")";
        let r = urls_in(e);
        assert!(
            !r.contains("p@") && !r.contains("abc") && !r.contains("x:y"),
            "{r}"
        );
        assert!(r.contains("Connection Failed: refused"), "{r}");
        assert!(r.starts_with("http://***@127.0.0.1:9/hook?auth=***"), "{r}");
        assert_eq!(urls_in("no url here"), "no url here");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("CT\nFAKE LOG\x1b[2J"), "CT\\nFAKE LOG\\u{1b}[2J");
        assert_eq!(printable("T2 tse cor"), "T2 tse cor");
        assert_eq!(printable("Ä\u{85}"), "Ä\\u{85}");
    }
}
