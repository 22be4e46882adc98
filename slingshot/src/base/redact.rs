//! Redacting credentials from URLs before they are shown: one rule for every log line, `check` report, AsyncAPI document and error that names a URL.
//!
//! The rule, applied by [`url`]:
//! - the password of the user info becomes `***`; the user name before it
//!   stays, so that an operator can tell which account is used. A user name
//!   alone (`https://TOKEN@host`, a common way to pass a token) becomes `***`;
//! - the value of **every** query parameter becomes `***`, whatever its name
//!   (`token`, `access_token`, `X-Amz-Signature`, `sig`, `key`, `api_key`...:
//!   a list of secret names would always miss one); names stay. A parameter
//!   without a value (`?abc123`) becomes `***`;
//! - a fragment becomes `***`;
//! - scheme, host, port and path stay, so the message still says where.
//!
//! Text that does not parse as a URL is redacted by its shape: whatever
//! stands between `://` and an `@` becomes `***`, and everything after the
//! first `?` or `#` becomes `***`.

/// What replaces each redacted part.
pub(crate) const REDACTED: &str = "***";

/// `text` (a URL) as it may be shown: without a password, a lone user name,
/// query values or a fragment (see the module's rule). A URL with none of
/// these is returned as it is: `https://svc:hunter2@host/v1/?token=abc`
/// is shown as `https://svc:***@host/v1/?token=***`.
pub(crate) fn url(text: &str) -> String {
    // `user:pw@host` parses as a URL of scheme `user` without a host.
    let Ok(mut parsed) = url::Url::parse(text)
        .map_err(drop)
        .and_then(|u| match u.cannot_be_a_base() {
            true => Err(()),
            false => Ok(u),
        })
    else {
        return by_shape(text);
    };
    let secret_user = !parsed.username().is_empty();
    if parsed.password().is_none() && !secret_user && parsed.query().is_none() && parsed.fragment().is_none() {
        return text.to_string();
    }
    let redacted = if parsed.password().is_some() {
        parsed.set_password(Some(REDACTED))
    } else if secret_user {
        parsed.set_username(REDACTED)
    } else {
        Ok(())
    };
    if redacted.is_err() {
        return by_shape(text);
    }
    if let Some(query) = parsed.query().map(redact_query) {
        parsed.set_query(Some(&query));
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(REDACTED));
    }
    parsed.to_string()
}

/// `text` (an error message, say) with every secret of `raw_url` redacted:
/// the URL itself wherever it appears whole, then each secret part of it
/// (password, lone user name, query value, fragment; raw and
/// percent-decoded) of 4 characters or more wherever it appears alone. For
/// messages of libraries that embed the URL they were given.
pub(crate) fn in_text(text: &str, raw_url: &str) -> String {
    let mut text = text.replace(raw_url, &url(raw_url));
    for secret in secrets_of(raw_url) {
        if secret.chars().count() >= 4 && secret != REDACTED {
            text = text.replace(&secret, REDACTED);
        }
    }
    text
}

/// The secret parts of `raw_url`, raw and percent-decoded.
fn secrets_of(raw_url: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(raw_url) else {
        return Vec::new();
    };
    let mut raw: Vec<&str> = Vec::new();
    match parsed.password() {
        Some(password) => raw.push(password),
        None => raw.push(parsed.username()),
    }
    if let Some(query) = parsed.query() {
        raw.extend(
            query
                .split('&')
                .map(|pair| pair.split_once('=').map_or(pair, |(_, value)| value)),
        );
    }
    raw.extend(parsed.fragment());
    let mut secrets: Vec<String> = Vec::new();
    for part in raw.into_iter().filter(|p| !p.is_empty()) {
        secrets.push(part.to_string());
        let plus_as_space = part.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&plus_as_space).decode_utf8_lossy();
        if decoded != part {
            secrets.push(decoded.into_owned());
        }
    }
    // Longest first, so that a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// `name=***` for every parameter of `query`; `***` for one without `=`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}={REDACTED}"),
            None if pair.is_empty() => String::new(),
            None => REDACTED.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Redaction of text that does not parse as a URL, by its shape.
fn by_shape(text: &str) -> String {
    let (head, tail) = match text.find(['?', '#']) {
        Some(cut) => (&text[..cut], Some(&text[cut..cut + 1])),
        None => (text, None),
    };
    let (scheme, rest) = match head.find("://") {
        Some(at) => head.split_at(at + 3),
        None => ("", head),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let shown = match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}{REDACTED}{}", &rest[at..]),
        None => head.to_string(),
    };
    match tail {
        Some(mark) => format!("{shown}{mark}{REDACTED}"),
        None => shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_become_stars_and_user_names_stay() {
        assert_eq!(
            url("http://user:s3cr3t@127.0.0.1:8080/"),
            "http://user:***@127.0.0.1:8080/"
        );
        assert_eq!(
            url("https://svc%20x:p%40ss@host/prefix"),
            "https://svc%20x:***@host/prefix"
        );
        assert_eq!(
            url("amqp://guest:guest@broker:5672/%2F"),
            "amqp://guest:***@broker:5672/%2F"
        );
    }

    #[test]
    fn a_lone_user_name_is_taken_for_a_token() {
        assert_eq!(url("https://ghp_abcdef@host/x"), "https://***@host/x");
    }

    #[test]
    fn every_query_value_and_the_fragment_are_redacted() {
        assert_eq!(
            url("http://u:otelpass@127.0.0.1:4318/?api_key=k3y"),
            "http://u:***@127.0.0.1:4318/?api_key=***"
        );
        assert_eq!(
            url("https://s3.example/b/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc&sig=x&password=p&region=eu"),
            "https://s3.example/b/k?X-Amz-Credential=***&X-Amz-Signature=***&sig=***&password=***&region=***"
        );
        assert_eq!(url("http://h/?bare-token&&a="), "http://h/?***&&a=***");
        assert_eq!(url("http://h/p#access_token=xyz"), "http://h/p#***");
        assert_eq!(url("http://h/p?"), "http://h/p?");
    }

    #[test]
    fn urls_without_secrets_are_shown_as_given() {
        for text in [
            "http://127.0.0.1:8080",
            "https://sys-map.example.com/prefix",
            "http://[::1]:9/",
        ] {
            assert_eq!(url(text), text);
        }
    }

    #[test]
    fn text_that_is_not_a_url_is_redacted_by_its_shape() {
        assert_eq!(url("http://u:pa ss@bad host:1/x?t=1"), "http://***@bad host:1/x?***");
        assert_eq!(url("user:pw@host:99"), "***@host:99");
        assert_eq!(url("host:99#frag"), "host:99#***");
        assert_eq!(url("sys-map.example.com"), "sys-map.example.com");
        assert_eq!(url(""), "");
    }

    #[test]
    fn secrets_are_redacted_inside_a_message() {
        let raw = "http://user:s3cr3t@127.0.0.1:1/?token=t0k3n%2Bx&a=b";
        let message = format!("invalid endpoint '{raw}/v1/traces': bad; password s3cr3t, token t0k3n+x");
        let shown = in_text(&message, raw);
        assert!(!shown.contains("s3cr3t") && !shown.contains("t0k3n"), "{shown}");
        assert!(
            shown.contains("http://user:***@127.0.0.1:1/?token=***&a=***/v1/traces"),
            "{shown}"
        );
        // Short values ("b") are left alone: replacing them would garble the text.
        assert!(shown.contains("bad"), "{shown}");
    }
}
