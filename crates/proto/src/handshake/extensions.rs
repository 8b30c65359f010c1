//! The generic `Sec-WebSocket-Extensions` header syntax (RFC 6455 §9.1).
//!
//! This file owns parsing header values into [`ExtensionOffer`]s and
//! formatting offers back into header values. It knows nothing about any
//! particular extension: checking parameters (for example
//! permessage-deflate's `client_max_window_bits`, RFC 7692) is the
//! extension's own job.

use super::{trim_ows, HandshakeError};

/// One extension as offered by a client or accepted by a server: its name and
/// its parameters in order.
///
/// A parameter without `=value` has `None` as its value. Quoted-string values
/// are stored unquoted and unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in the order they appeared.
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionOffer {
    /// An offer named `name` with no parameters.
    pub fn new(name: impl Into<String>) -> Self {
        ExtensionOffer {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Appends a parameter and returns the offer, for building offers
    /// fluently.
    pub fn with_param(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.params.push((name.into(), value.map(str::to_owned)));
        self
    }

    /// The first parameter named `name` (ASCII case-insensitive): `None` when
    /// absent, `Some(None)` when present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

/// Parse one or more Sec-WebSocket-Extensions header values (RFC 6455 §9.1
/// grammar; RFC 7230 tokens; param values may be tokens or quoted-strings,
/// quotes removed and \-escapes undone). Offers in order across all values.
/// Malformed syntax → Err(Malformed...).
///
/// Optional whitespace is accepted around `,`, `;` and `=`, and empty list
/// elements (`a, , b`) are skipped as RFC 7230 §7 requires, but each header
/// value must hold at least one extension. As RFC 6455 §9.1 demands, a
/// quoted value must be a token once unquoted.
///
/// ```
/// use wsline_proto::handshake::parse_extensions;
/// let offers = parse_extensions(["permessage-deflate; client_max_window_bits=\"10\", x-foo"]).unwrap();
/// assert_eq!(offers[0].param("client_max_window_bits"), Some(Some("10")));
/// assert_eq!(offers[1].name, "x-foo");
/// ```
pub fn parse_extensions<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    let mut out = Vec::new();
    for value in values {
        parse_value(value, &mut out)?;
    }
    Ok(out)
}

/// Formats one offer as a header value element, e.g.
/// `"permessage-deflate; client_max_window_bits=10; server_no_context_takeover"`.
///
/// Values that are not tokens are written as quoted-strings, so the result
/// parses back with [`parse_extensions`] whenever the name and parameter
/// names are tokens. Join several offers with `", "`.
pub fn format_extension(offer: &ExtensionOffer) -> String {
    let mut s = offer.name.clone();
    for (name, value) in &offer.params {
        s.push_str("; ");
        s.push_str(name);
        if let Some(value) = value {
            s.push('=');
            if is_token(value) {
                s.push_str(value);
            } else {
                s.push('"');
                for c in value.chars() {
                    if c == '"' || c == '\\' {
                        s.push('\\');
                    }
                    s.push(c);
                }
                s.push('"');
            }
        }
    }
    s
}

/// RFC 7230 §3.2.6 `tchar`: alphanumerics and ``!#$%&'*+-.^_`|~``.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `s` is a non-empty RFC 7230 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn malformed(what: &str, value: &str, at: usize) -> HandshakeError {
    HandshakeError::Malformed(format!(
        "invalid Sec-WebSocket-Extensions header {value:?}: {what} at byte {at}"
    ))
}

/// A cursor over one header value.
struct Cursor<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        // Token bytes are ASCII, so both ends are char boundaries.
        self.src.get(start..self.pos).filter(|t| !t.is_empty())
    }

    /// Parses a quoted-string starting at the opening quote; returns the
    /// unescaped content.
    fn quoted(&mut self) -> Result<String, HandshakeError> {
        let start = self.pos;
        self.pos += 1; // opening quote
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => return Err(malformed("unterminated quoted string", self.src, start)),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if b == b'\t' || b >= 0x20 && b != 0x7f => {
                            bytes.push(b);
                            self.pos += 1;
                        }
                        _ => {
                            return Err(malformed(
                                "invalid escape in quoted string",
                                self.src,
                                self.pos,
                            ))
                        }
                    }
                }
                Some(b) if b == b'\t' || b >= 0x20 && b != 0x7f => {
                    bytes.push(b);
                    self.pos += 1;
                }
                Some(_) => {
                    return Err(malformed(
                        "control character in quoted string",
                        self.src,
                        self.pos,
                    ))
                }
            }
        }
        String::from_utf8(bytes)
            .map_err(|_| malformed("invalid UTF-8 in quoted string", self.src, start))
    }
}

fn parse_value(value: &str, out: &mut Vec<ExtensionOffer>) -> Result<(), HandshakeError> {
    let mut cur = Cursor { src: value, pos: 0 };
    let mut found = 0usize;
    loop {
        cur.skip_ows();
        match cur.peek() {
            None => break,
            Some(b',') => {
                // Empty list element.
                cur.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = cur
            .token()
            .ok_or_else(|| malformed("expected an extension name", value, cur.pos))?;
        let mut offer = ExtensionOffer::new(name);
        loop {
            cur.skip_ows();
            match cur.peek() {
                None => break,
                Some(b',') => {
                    cur.pos += 1;
                    break;
                }
                Some(b';') => cur.pos += 1,
                Some(_) => return Err(malformed("expected ';' or ','", value, cur.pos)),
            }
            cur.skip_ows();
            let pname = cur
                .token()
                .ok_or_else(|| malformed("expected a parameter name after ';'", value, cur.pos))?;
            cur.skip_ows();
            let pvalue = if cur.peek() == Some(b'=') {
                cur.pos += 1;
                cur.skip_ows();
                let at = cur.pos;
                let v = if cur.peek() == Some(b'"') {
                    let v = cur.quoted()?;
                    if !is_token(&v) {
                        return Err(malformed(
                            "a quoted parameter value must be a token once unquoted",
                            value,
                            at,
                        ));
                    }
                    v
                } else {
                    cur.token()
                        .ok_or_else(|| {
                            malformed("expected a parameter value after '='", value, at)
                        })?
                        .to_owned()
                };
                Some(v)
            } else {
                None
            };
            offer.params.push((pname.to_owned(), pvalue));
        }
        out.push(offer);
        found += 1;
    }
    if found == 0 {
        return Err(HandshakeError::Malformed(format!(
            "invalid Sec-WebSocket-Extensions header {:?}: it names no extension",
            trim_ows(value)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(name: &str, params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        params
            .iter()
            .fold(ExtensionOffer::new(name), |o, (n, v)| o.with_param(*n, *v))
    }

    #[test]
    fn tchar_is_the_rfc_7230_set() {
        for b in 0..=u8::MAX {
            let rfc = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), rfc, "{b:#04x}");
        }
    }

    #[test]
    fn parses_plain_offer() {
        let got = parse_extensions(["permessage-deflate"]).unwrap();
        assert_eq!(got, [offer("permessage-deflate", &[])]);
    }

    #[test]
    fn parses_params_with_and_without_values() {
        let got = parse_extensions([
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
        ])
        .unwrap();
        assert_eq!(
            got,
            [offer(
                "permessage-deflate",
                &[
                    ("client_max_window_bits", None),
                    ("server_max_window_bits", Some("10"))
                ]
            )]
        );
        assert_eq!(got[0].param("CLIENT_MAX_WINDOW_BITS"), Some(None));
        assert_eq!(got[0].param("server_max_window_bits"), Some(Some("10")));
        assert_eq!(got[0].param("absent"), None);
    }

    #[test]
    fn parses_quoted_values_and_escapes() {
        let got = parse_extensions([r#"x; a="10"; b="a\bc"; c = "\"""#]);
        // `\"` unescapes to `"`, which is not a token: refused.
        assert!(matches!(got, Err(HandshakeError::Malformed(_))));
        let got = parse_extensions([r#"x; a="10"; b="a\bc""#]).unwrap();
        assert_eq!(got, [offer("x", &[("a", Some("10")), ("b", Some("abc"))])]);
    }

    #[test]
    fn parses_multiple_offers_and_headers_in_order() {
        let got = parse_extensions([
            "permessage-deflate; client_max_window_bits, permessage-deflate",
            "x-webkit-deflate-frame",
        ])
        .unwrap();
        let names: Vec<_> = got.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "permessage-deflate",
                "permessage-deflate",
                "x-webkit-deflate-frame"
            ]
        );
        assert_eq!(got[0].params.len(), 1);
        assert!(got[1].params.is_empty());
    }

    #[test]
    fn tolerates_whitespace_and_empty_elements() {
        let got = parse_extensions([" \t a ;b = 1\t;  c ,, \t, d\t "]).unwrap();
        assert_eq!(
            got,
            [
                offer("a", &[("b", Some("1")), ("c", None)]),
                offer("d", &[])
            ]
        );
        assert_eq!(parse_extensions(std::iter::empty()).unwrap(), []);
    }

    #[test]
    fn refuses_malformed_input() {
        for bad in [
            "",
            "  ",
            ",",
            ";a",
            "a;",
            "a; ;b",
            "a b",
            "a;b=",
            "a;b=c d",
            "a;=c",
            "a;b=\"unterminated",
            "a;b=\"\"",
            "a;b=\"x y\"",
            "a;b=\"\\",
            "a;b=\"x\u{1}\"",
            "a;b=\"x\"y",
            "a=b",
            "\"a\"",
            "é",
            "a;b=é",
            "a;b\"c\"",
        ] {
            let err = parse_extensions([bad]).expect_err(bad);
            assert!(matches!(err, HandshakeError::Malformed(_)), "{bad}: {err}");
            assert_eq!(err.status(), 400);
        }
        // One bad value spoils the lot.
        assert!(parse_extensions(["a", "b;"]).is_err());
    }

    #[test]
    fn error_message_points_at_the_problem() {
        let err = parse_extensions(["a; ;b"]).unwrap_err().to_string();
        assert!(err.contains("expected a parameter name after ';'"), "{err}");
        assert!(err.contains("byte 3"), "{err}");
    }

    #[test]
    fn formats_offers() {
        let o = offer(
            "permessage-deflate",
            &[
                ("client_max_window_bits", Some("10")),
                ("server_no_context_takeover", None),
            ],
        );
        assert_eq!(
            format_extension(&o),
            "permessage-deflate; client_max_window_bits=10; server_no_context_takeover"
        );
        assert_eq!(format_extension(&offer("x", &[])), "x");
        assert_eq!(
            format_extension(&offer("x", &[("a", Some("b c\"\\"))])),
            r#"x; a="b c\"\\""#
        );
    }

    fn token_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
    }

    proptest! {
        #[test]
        fn parse_extensions_never_panics(a in any::<String>(), b in "[ -~\t]{0,64}") {
            let _ = parse_extensions([a.as_str(), b.as_str()]);
        }

        #[test]
        fn format_then_parse_round_trips(
            name in token_strategy(),
            params in proptest::collection::vec((token_strategy(), proptest::option::of(token_strategy())), 0..4),
        ) {
            let o = ExtensionOffer { name, params };
            let parsed = parse_extensions([format_extension(&o).as_str()]).unwrap();
            prop_assert_eq!(parsed, vec![o]);
        }
    }
}
