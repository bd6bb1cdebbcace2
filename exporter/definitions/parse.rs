//! Parses Cisco's public `versions.id` document into the newest published
//! TETRA definition version.
//!
//! The document lists versions newest first, each as a `value="NNNNN"`
//! attribute; the first such attribute in document order is the newest daily
//! version. The whole document is still checked to be well formed, so that a
//! body cut off in transit is reported as such rather than trusted.
//!
//! This module does not fetch the document, cache it or compute any lag; it
//! only turns bytes into a number or a bounded error.

use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// Longest excerpt of a bad value kept in an error message, in characters.
const MAX_EXCERPT_CHARS: usize = 64;

/// The UTF-8 byte order mark, which some servers and editors prepend.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why the versions document gave no version.
#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    #[error("not a well-formed XML document: {0}")]
    Malformed(String),
    #[error("no value attribute in the document")]
    NoVersion,
    #[error("first value attribute is not a version number: {0:?}")]
    BadValue(String),
}

impl VersionsError {
    /// The fixed, bounded reason for a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            VersionsError::Malformed(_) => "malformed",
            VersionsError::NoVersion => "no_version",
            VersionsError::BadValue(_) => "bad_value",
        }
    }
}

/// The newest published version: the first `value` attribute of any element in the document
/// (domain.md: the first value="NNNNN" attribute is the newest daily version).
pub fn parse_versions_document(bytes: &[u8]) -> Result<u64, VersionsError> {
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let text = std::str::from_utf8(body).map_err(|e| {
        VersionsError::Malformed(format!("not UTF-8 (at byte {})", e.valid_up_to()))
    })?;

    let mut reader = Reader::from_str(text);
    // Defaults already reject mismatched end tags; set it explicitly because
    // the open-element count below relies on it.
    reader.config_mut().check_end_names = true;

    let mut first_value: Option<String> = None;
    let mut depth: usize = 0;
    let mut root_seen = false;
    loop {
        let event = reader.read_event().map_err(|e| {
            VersionsError::Malformed(format!("{e} (at byte {})", reader.error_position()))
        })?;
        match event {
            Event::Start(start) => {
                enter_element(depth, &mut root_seen)?;
                depth += 1;
                note_value(&start, &mut first_value)?;
            }
            Event::Empty(start) => {
                enter_element(depth, &mut root_seen)?;
                note_value(&start, &mut first_value)?;
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    VersionsError::Malformed("end tag without a start tag".to_owned())
                })?;
            }
            Event::Text(t) if depth == 0 && !t.trim_matches(is_xml_space).is_empty() => {
                return Err(VersionsError::Malformed(
                    "text outside the root element".to_owned(),
                ));
            }
            Event::GeneralRef(_) | Event::CData(_) if depth == 0 => {
                return Err(VersionsError::Malformed(
                    "text outside the root element".to_owned(),
                ));
            }
            Event::GeneralRef(reference) => check_reference(&reference)?,
            Event::Eof => break,
            // Element text, declarations, comments and the like carry no
            // version.
            _ => {}
        }
    }
    if depth > 0 {
        return Err(VersionsError::Malformed(
            "document ends inside an element (truncated?)".to_owned(),
        ));
    }
    if !root_seen {
        return Err(VersionsError::Malformed("no root element".to_owned()));
    }
    let value = first_value.ok_or(VersionsError::NoVersion)?;
    parse_version(&value).ok_or_else(|| VersionsError::BadValue(excerpt(&value)))
}

/// Notes that an element starts at `depth`, refusing a second root: a
/// document is one element, and two would mean something was glued on.
fn enter_element(depth: usize, root_seen: &mut bool) -> Result<(), VersionsError> {
    if depth == 0 && *root_seen {
        return Err(VersionsError::Malformed(
            "more than one root element".to_owned(),
        ));
    }
    *root_seen = true;
    Ok(())
}

/// Records the element's `value` attribute if none was seen before. Every
/// attribute is still walked, because they are parsed lazily and a broken
/// one (unquoted, duplicated) makes the document malformed.
fn note_value(
    start: &BytesStart<'_>,
    first_value: &mut Option<String>,
) -> Result<(), VersionsError> {
    for attr in start.attributes() {
        let attr = attr.map_err(|e| VersionsError::Malformed(e.to_string()))?;
        if first_value.is_none() && attr.key.into_inner() == "value" {
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| VersionsError::Malformed(e.to_string()))?;
            *first_value = Some(value.into_owned());
        }
    }
    Ok(())
}

/// A reference in element text must be a valid character reference or one
/// of the five predefined entities; anything else would need a DTD, which
/// this document never has.
fn check_reference(reference: &BytesRef<'_>) -> Result<(), VersionsError> {
    let is_char = reference
        .resolve_char_ref()
        .map_err(|e| VersionsError::Malformed(e.to_string()))?
        .is_some();
    let name: &str = reference;
    if is_char || resolve_xml_entity(name).is_some() {
        Ok(())
    } else {
        Err(VersionsError::Malformed(format!(
            "unknown entity &{};",
            excerpt(name)
        )))
    }
}

/// Decimal digits only (surrounding whitespace allowed): `str::parse` would
/// also take a leading `+`.
fn parse_version(value: &str) -> Option<u64> {
    let digits = value.trim_matches(is_xml_space);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// A bounded copy of untrusted text for an error message.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((end, _)) => format!("{}...", text.get(..end).unwrap_or_default()),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn reason(result: Result<u64, VersionsError>) -> &'static str {
        match result {
            Ok(version) => panic!("expected an error, got {version}"),
            Err(e) => e.reason(),
        }
    }

    fn parse_str(text: &str) -> Result<u64, VersionsError> {
        parse_versions_document(text.as_bytes())
    }

    #[test]
    fn shared_fixture() {
        let bytes = fixture(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/versions/versions.id"
        ));
        assert_eq!(parse_versions_document(&bytes).unwrap(), 90606);
    }

    #[test]
    fn own_fixtures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/versions/");
        let truncated = fixture(&format!("{dir}versions-truncated.id"));
        assert_eq!(reason(parse_versions_document(&truncated)), "malformed");
        let no_value = fixture(&format!("{dir}versions-no-value.id"));
        assert_eq!(reason(parse_versions_document(&no_value)), "no_version");
    }

    #[test]
    fn first_value_wins_at_any_depth() {
        let cases = [
            (
                "<versions><version value=\"90606\"/><version value=\"90605\"/></versions>",
                90606,
            ),
            (
                "<versions><version value=\"1\"/><version value=\"999\"/></versions>",
                1,
            ),
            ("<v value=\"7\"><w value=\"8\"/></v>", 7),
            ("<a><b><c><d value=\" 42 \"/></c></b></a>", 42),
            ("<a><b name=\"x\"/><b name=\"y\" value=\"5\"/></a>", 5),
            ("\u{feff}<?xml version=\"1.0\"?>\r\n<a value='3'/>\r\n", 3),
            ("<a value=\"&#57;0606\"/>", 90606),
            // A prefixed attribute is a different attribute.
            ("<a x:value=\"1\" xmlns:x=\"urn:x\"><b value=\"2\"/></a>", 2),
            ("<a value=\"18446744073709551615\"/>", u64::MAX),
        ];
        for (text, want) in cases {
            assert_eq!(parse_str(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn truncated_documents_are_malformed() {
        let full = fixture(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/versions/versions.id"
        ));
        let full = String::from_utf8(full).unwrap();
        let end = full.trim_end().len();
        // Every cut that leaves at least the root open is malformed; a cut
        // before the root is malformed too (no root element).
        for cut in 0..end {
            let Some(prefix) = full.get(..cut) else {
                continue;
            };
            assert_eq!(
                reason(parse_str(prefix)),
                "malformed",
                "cut at {cut}: {prefix:?}"
            );
        }
    }

    #[test]
    fn malformed_documents() {
        let cases = [
            "",
            "   \n",
            "<?xml version=\"1.0\"?>",
            "not xml",
            "<a>",
            "<a><b value=\"1\"></a>",
            "</a>",
            "<a/><b/>",
            "<a value='3'/>junk",
            "<a value=\"1\" value=\"2\"/>",
            "<a value=1/>",
            "<a><b c=d/><b value=\"1\"/></a>",
            "<a value=\"&bogus;\"/>",
            "<a>&bogus;</a>",
        ];
        for text in cases {
            assert_eq!(reason(parse_str(text)), "malformed", "{text:?}");
        }
        // Not UTF-8: Latin-1 bytes, and UTF-16 (not a format this document uses).
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend("<a value=\"1\"/>".encode_utf16().flat_map(u16::to_le_bytes));
        for bytes in [&b"<a value=\"1\">\xE9</a>"[..], &utf16] {
            assert_eq!(reason(parse_versions_document(bytes)), "malformed");
        }
    }

    #[test]
    fn no_version() {
        for text in [
            "<versions/>",
            "<html><body>Sign in to continue</body></html>",
        ] {
            assert_eq!(reason(parse_str(text)), "no_version", "{text}");
        }
    }

    #[test]
    fn bad_values() {
        for value in [
            "",
            " ",
            "x",
            "1.5",
            "-1",
            "+5",
            "1:90606",
            "18446744073709551616",
        ] {
            let text = format!("<a value=\"{value}\"><b value=\"2\"/></a>");
            assert_eq!(reason(parse_str(&text)), "bad_value", "{value:?}");
        }
        let long = format!("<a value=\"{}\"/>", "y".repeat(10_000));
        match parse_str(&long) {
            Err(e @ VersionsError::BadValue(_)) => assert!(e.to_string().len() < 200),
            other => panic!("expected BadValue, got {other:?}"),
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(
            VersionsError::Malformed(String::new()).reason(),
            "malformed"
        );
        assert_eq!(VersionsError::NoVersion.reason(), "no_version");
        assert_eq!(VersionsError::BadValue(String::new()).reason(), "bad_value");
    }
}
