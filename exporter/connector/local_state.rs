//! Reads the connector's `local.xml`: its id, the TETRA definition version it
//! holds and the last update error it recorded.
//!
//! The file is read once, with a size cap, decoded (UTF-8 with or without a
//! byte order mark, or UTF-16 with one, as seen on Windows) and parsed as a
//! whole: a document cut off mid-write is rejected rather than half-used, so
//! a reader racing the connector's own write sees an error, never a wrong
//! value.
//!
//! This module does not find the file (install directory, registry), does not
//! read `policy.xml`, does not compare the version with the newest published
//! one and does not render metrics. Errors carry a fixed [`reason`] for
//! labels; their messages are for logs only.
//!
//! [`reason`]: LocalStateError::reason

use std::borrow::Cow;
use std::path::Path;
use std::time::SystemTime;

use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;

/// What a successful parse of local.xml yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalState {
    /// The connector's id, from `/config/agent/uuid`; `None` when absent or
    /// blank.
    pub connector_id: Option<String>,
    /// The definition version held, the number after the last colon of
    /// `PREFIX:NNNNN`; `None` when neither layout records one.
    pub definitions_version: Option<u64>,
    /// The connector's last update error as the unsigned 32-bit code; 0 when
    /// the element is absent or empty.
    pub last_error: u32,
}

/// The largest `local.xml` read by default. Real files are a few kilobytes;
/// the cap only keeps a corrupt or hostile file from being read whole.
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Deepest element nesting accepted. Real files nest about five levels; the
/// limit bounds the work a pathological file can cause.
const MAX_DEPTH: usize = 64;

/// Longest excerpt of a bad value kept in an error message, in characters.
const MAX_EXCERPT_CHARS: usize = 64;

/// Why `local.xml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalStateError {
    #[error("local.xml does not exist")]
    NotFound,
    #[error("cannot read local.xml: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("local.xml is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("local.xml is empty")]
    Empty,
    #[error("local.xml has a bad text encoding: {0}")]
    Encoding(String),
    #[error("local.xml is not a well-formed connector state document: {0}")]
    Malformed(String),
    #[error("local.xml has an unusable <{element}> value {value:?}")]
    BadValue {
        element: &'static str,
        value: String,
    },
}

impl LocalStateError {
    /// The fixed, bounded reason for a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            LocalStateError::NotFound => "not_found",
            LocalStateError::Unreadable(_) => "unreadable",
            LocalStateError::TooLarge { .. } => "too_large",
            LocalStateError::Empty => "empty",
            LocalStateError::Encoding(_) => "encoding",
            LocalStateError::Malformed(_) => "malformed",
            LocalStateError::BadValue { .. } => "bad_value",
        }
    }
}

/// Reads the file with a size cap (read at most max_bytes+1 bytes, never the whole of a huge file)
/// and parses it; also returns the file's mtime.
pub fn read_local_state(
    path: &Path,
    max_bytes: u64,
) -> Result<(LocalState, SystemTime), LocalStateError> {
    let (bytes, modified) = super::read_capped(path, max_bytes).map_err(|e| match e {
        super::ReadError::NotFound => LocalStateError::NotFound,
        super::ReadError::Unreadable(e) => LocalStateError::Unreadable(e),
        super::ReadError::NotAFile => {
            LocalStateError::Unreadable(std::io::Error::other("not a regular file"))
        }
        super::ReadError::TooLarge { limit } => LocalStateError::TooLarge { limit },
    })?;
    Ok((parse_local_state(&bytes)?, modified))
}

/// Parses the bytes of a `local.xml`.
pub fn parse_local_state(bytes: &[u8]) -> Result<LocalState, LocalStateError> {
    let text = decode(bytes)?;
    if trim_xml(&text).is_empty() {
        return Err(LocalStateError::Empty);
    }
    let raw = scan(&text)?;
    interpret(raw)
}

/// Meaning of the connector's `lasterror` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastErrorMeaning {
    None,
    ProxyUnreachable,
    ProxyAuthFailed,
    ProxyDownloadFailed,
    Unknown,
}

// The connector stores these as unsigned 32-bit values; Cisco's documents
// also quote them as signed numbers, given in the comments.
/// -2103: could not connect to the proxy.
const CODE_PROXY_UNREACHABLE: u32 = 4_294_965_193;
/// -2100: could not authenticate to the proxy.
const CODE_PROXY_AUTH_FAILED: u32 = 4_294_965_196;
/// -2109: connected to the proxy but the download failed.
const CODE_PROXY_DOWNLOAD_FAILED: u32 = 4_294_965_187;

impl LastErrorMeaning {
    /// Classifies a code; anything not documented is `Unknown` (the caller
    /// keeps the raw number for that).
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => LastErrorMeaning::None,
            CODE_PROXY_UNREACHABLE => LastErrorMeaning::ProxyUnreachable,
            CODE_PROXY_AUTH_FAILED => LastErrorMeaning::ProxyAuthFailed,
            CODE_PROXY_DOWNLOAD_FAILED => LastErrorMeaning::ProxyDownloadFailed,
            _ => LastErrorMeaning::Unknown,
        }
    }

    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            LastErrorMeaning::None => "none",
            LastErrorMeaning::ProxyUnreachable => "proxy_unreachable",
            LastErrorMeaning::ProxyAuthFailed => "proxy_auth_failed",
            LastErrorMeaning::ProxyDownloadFailed => "proxy_download_failed",
            LastErrorMeaning::Unknown => "unknown",
        }
    }
}

/// Decodes by byte order mark: UTF-8 without one, otherwise what the mark
/// says. The declaration's `encoding` is deliberately not consulted: after
/// decoding, the parser sees a Rust string, and the mark is what Windows
/// writers actually get right.
pub(crate) fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, LocalStateError> {
    let (encoding, bom_len) =
        encoding_rs::Encoding::for_bom(bytes).unwrap_or((encoding_rs::UTF_8, 0));
    let body = bytes.get(bom_len..).unwrap_or_default();
    // NUL is never valid in XML, but it is valid UTF-8: without this check a
    // UTF-16 file that lost its mark would surface as a confusing XML error.
    if bom_len == 0 && body.contains(&0) {
        return Err(LocalStateError::Encoding(
            "NUL byte without a byte order mark (UTF-16 without a mark?)".to_owned(),
        ));
    }
    encoding
        .decode_without_bom_handling_and_without_replacement(body)
        .ok_or_else(|| {
            LocalStateError::Encoding(format!("malformed {} byte sequence", encoding.name()))
        })
}

/// The elements whose text is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Uuid,
    DefVersions,
    Definitions,
    LastError,
}

const UUID_PARENTS: [&str; 2] = ["config", "agent"];
const DEFVERSIONS_PARENTS: [&str; 4] = ["config", "agent", "engine", "tetra"];
const DEFINITIONS_PARENTS: [&str; 4] = ["config", "agent", "engine", "stats"];

/// An open element: its name and, for a kept field, the text gathered so far.
struct Open {
    name: String,
    capture: Option<(Field, String)>,
}

/// The kept texts, unparsed. For each field the first occurrence in document
/// order wins, as with Cisco's own `//tetra/lasterror` query.
#[derive(Debug, Default)]
struct RawFields {
    uuid: Option<String>,
    defversions: Option<String>,
    definitions: Option<String>,
    lasterror: Option<String>,
}

impl RawFields {
    fn keep(&mut self, field: Field, text: String) {
        let slot = match field {
            Field::Uuid => &mut self.uuid,
            Field::DefVersions => &mut self.defversions,
            Field::Definitions => &mut self.definitions,
            Field::LastError => &mut self.lasterror,
        };
        if slot.is_none() {
            *slot = Some(text);
        }
    }
}

/// Walks the whole document, checking it is well formed, and keeps the texts
/// of the interesting elements.
fn scan(text: &str) -> Result<RawFields, LocalStateError> {
    let mut reader = Reader::from_str(text);
    // Defaults already reject mismatched and unmatched end tags; set it
    // explicitly because a truncated file must never pass as complete.
    reader.config_mut().check_end_names = true;

    let mut stack: Vec<Open> = Vec::new();
    let mut root_seen = false;
    let mut fields = RawFields::default();
    loop {
        let event = reader.read_event().map_err(|e| {
            LocalStateError::Malformed(format!(
                "{e} (at byte {} of the decoded text)",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(start) => {
                let open = open_element(&stack, &start, root_seen)?;
                root_seen = true;
                stack.push(open);
            }
            Event::Empty(start) => {
                let open = open_element(&stack, &start, root_seen)?;
                root_seen = true;
                close_element(open, &mut fields);
            }
            Event::End(_) => {
                // The reader has matched the name already; an empty stack
                // here would mean it did not, so still refuse it.
                let open = stack.pop().ok_or_else(|| {
                    LocalStateError::Malformed("end tag without a start tag".to_owned())
                })?;
                close_element(open, &mut fields);
            }
            Event::Text(t) => append_text(&mut stack, &t.xml10_content())?,
            Event::CData(t) => append_text(&mut stack, &t.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved = resolve_reference(&r)?;
                append_text(&mut stack, &resolved)?;
            }
            Event::Eof => break,
            // Declaration (its `encoding` is moot once decoded), comments,
            // processing instructions and DTDs carry nothing we use.
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(LocalStateError::Malformed(format!(
            "file ends inside <{}> (truncated?)",
            excerpt(&open.name)
        )));
    }
    if !root_seen {
        return Err(LocalStateError::Malformed("no root element".to_owned()));
    }
    Ok(fields)
}

fn open_element(
    stack: &[Open],
    start: &BytesStart<'_>,
    root_seen: bool,
) -> Result<Open, LocalStateError> {
    let name = start.name().into_inner();
    if stack.is_empty() {
        if root_seen {
            return Err(LocalStateError::Malformed(
                "more than one root element".to_owned(),
            ));
        }
        check_root(start)?;
    }
    // Attributes are parsed lazily; walk them so that a broken one anywhere
    // makes the document malformed, as a strict XML parser would.
    for attr in start.attributes() {
        attr.map_err(|e| LocalStateError::Malformed(e.to_string()))?;
    }
    if stack.len() >= MAX_DEPTH {
        return Err(LocalStateError::Malformed(format!(
            "elements nest deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(Open {
        name: name.to_owned(),
        capture: classify(stack, name).map(|field| (field, String::new())),
    })
}

/// The root must be `<config>` outside any namespace; anything else (for
/// example `policy.xml`, whose `config` sits in the XML-DSig namespace) is
/// not a connector state file.
fn check_root(start: &BytesStart<'_>) -> Result<(), LocalStateError> {
    let name = start.name().into_inner();
    if name != "config" {
        return Err(LocalStateError::Malformed(format!(
            "root element is <{}>, expected <config>",
            excerpt(name)
        )));
    }
    for attr in start.attributes() {
        let attr = attr.map_err(|e| LocalStateError::Malformed(e.to_string()))?;
        if attr.key.into_inner() == "xmlns" && !attr.value.is_empty() {
            return Err(LocalStateError::Malformed(format!(
                "root <config> is in namespace {:?}, expected none",
                excerpt(&attr.value)
            )));
        }
    }
    Ok(())
}

/// Which kept field, if any, an element starting below `stack` is. Fixed
/// paths for the id and versions; `lasterror` anywhere under a `tetra`
/// parent, because its exact place is not documented.
fn classify(stack: &[Open], name: &str) -> Option<Field> {
    let parents = || stack.iter().map(|open| open.name.as_str());
    match name {
        "uuid" if parents().eq(UUID_PARENTS) => Some(Field::Uuid),
        "defversions" if parents().eq(DEFVERSIONS_PARENTS) => Some(Field::DefVersions),
        "definitions" if parents().eq(DEFINITIONS_PARENTS) => Some(Field::Definitions),
        "lasterror" if stack.last().is_some_and(|parent| parent.name == "tetra") => {
            Some(Field::LastError)
        }
        _ => None,
    }
}

fn close_element(open: Open, fields: &mut RawFields) {
    if let Some((field, text)) = open.capture {
        fields.keep(field, text);
    }
}

/// Adds character data to the innermost open element; outside the root only
/// whitespace is allowed.
fn append_text(stack: &mut [Open], text: &str) -> Result<(), LocalStateError> {
    match stack.last_mut() {
        Some(open) => {
            if let Some((_, kept)) = &mut open.capture {
                kept.push_str(text);
            }
            Ok(())
        }
        None if trim_xml(text).is_empty() => Ok(()),
        None => Err(LocalStateError::Malformed(
            "text outside the root element".to_owned(),
        )),
    }
}

/// Resolves `&#NN;`, `&#xNN;` and the five predefined entities. Other
/// entities would need a DTD, which this file never has.
fn resolve_reference<'a>(reference: &'a BytesRef<'_>) -> Result<Cow<'a, str>, LocalStateError> {
    let resolved = reference
        .resolve_char_ref()
        .map_err(|e| LocalStateError::Malformed(e.to_string()))?;
    if let Some(ch) = resolved {
        return Ok(Cow::Owned(ch.to_string()));
    }
    let name: &str = reference;
    resolve_xml_entity(name)
        .map(Cow::Borrowed)
        .ok_or_else(|| LocalStateError::Malformed(format!("unknown entity &{};", excerpt(name))))
}

/// Turns the kept texts into values.
fn interpret(fields: RawFields) -> Result<LocalState, LocalStateError> {
    let connector_id = non_blank(fields.uuid.as_deref()).map(str::to_owned);

    // The newer layout wins when it yields a version; the older one is only
    // a fallback, so it is not validated when unused.
    let newer = match non_blank(fields.definitions.as_deref()) {
        Some(json) => newest_engine_version(json)?,
        None => None,
    };
    let definitions_version = match (newer, non_blank(fields.defversions.as_deref())) {
        (Some(version), _) => Some(version),
        (None, Some(text)) => {
            Some(parse_prefixed_version(text).ok_or_else(|| bad_value("defversions", text))?)
        }
        (None, None) => None,
    };

    let last_error = match non_blank(fields.lasterror.as_deref()) {
        Some(text) => parse_last_error(text).ok_or_else(|| bad_value("lasterror", text))?,
        None => 0,
    };

    Ok(LocalState {
        connector_id,
        definitions_version,
        last_error,
    })
}

/// The largest `defVersion` in `{"engineDefinitions":[{"defVersion":...}]}`;
/// `None` for an empty list. Several engines may be listed; the newest is the
/// one that matters for lag.
fn newest_engine_version(json: &str) -> Result<Option<u64>, LocalStateError> {
    let bad = || bad_value("definitions", json);
    let doc: serde_json::Value = serde_json::from_str(json).map_err(|_| bad())?;
    let entries = doc
        .get("engineDefinitions")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(bad)?;
    let mut newest = None;
    for entry in entries {
        let text = entry
            .get("defVersion")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(bad)?;
        let version = parse_prefixed_version(text).ok_or_else(|| bad_value("definitions", text))?;
        newest = newest.max(Some(version));
    }
    Ok(newest)
}

/// `PREFIX:NNNNN` to `NNNNN`: only the digits after the last colon count.
/// A bare number is accepted too.
fn parse_prefixed_version(text: &str) -> Option<u64> {
    let digits = trim_xml(text).rsplit(':').next()?;
    if !is_ascii_digits(digits) {
        return None;
    }
    digits.parse().ok()
}

/// Unsigned 32-bit decimal, or a negative signed 32-bit decimal mapped to the
/// same bits (-2100 is 4294965196): Cisco quotes the codes both ways.
fn parse_last_error(text: &str) -> Option<u32> {
    let text = trim_xml(text);
    if is_ascii_digits(text) {
        return text.parse().ok();
    }
    match text.strip_prefix('-') {
        Some(magnitude) if is_ascii_digits(magnitude) => {
            text.parse::<i32>().ok().map(i32::cast_unsigned)
        }
        _ => None,
    }
}

/// Digits only: `str::parse` would also take a leading `+`.
fn is_ascii_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn non_blank(text: Option<&str>) -> Option<&str> {
    text.map(trim_xml).filter(|t| !t.is_empty())
}

/// Trims XML whitespace (space, tab, CR, LF) only.
fn trim_xml(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\r', '\n'])
}

fn bad_value(element: &'static str, value: &str) -> LocalStateError {
    LocalStateError::BadValue {
        element,
        value: excerpt(trim_xml(value)),
    }
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

    use std::io::Write;
    use std::path::PathBuf;

    fn shared(name: &str) -> PathBuf {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/connector"
        ))
        .join(name)
    }

    fn own(name: &str) -> PathBuf {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/connector"
        ))
        .join(name)
    }

    fn read(path: PathBuf) -> Result<LocalState, LocalStateError> {
        read_local_state(&path, DEFAULT_MAX_BYTES).map(|(state, _)| state)
    }

    fn state(id: &str, version: Option<u64>, last_error: u32) -> LocalState {
        LocalState {
            connector_id: Some(id.to_owned()),
            definitions_version: version,
            last_error,
        }
    }

    fn parse_str(text: &str) -> Result<LocalState, LocalStateError> {
        parse_local_state(text.as_bytes())
    }

    /// A document with `inner` under `/config/agent/engine/tetra`.
    fn with_tetra(inner: &str) -> String {
        format!("<config><agent><engine><tetra>{inner}</tetra></engine></agent></config>")
    }

    fn last_error_of(text: &str) -> Result<u32, LocalStateError> {
        parse_str(&with_tetra(&format!("<lasterror>{text}</lasterror>"))).map(|s| s.last_error)
    }

    fn reason<T: std::fmt::Debug>(result: Result<T, LocalStateError>) -> &'static str {
        match result {
            Ok(value) => panic!("expected an error, got {value:?}"),
            Err(e) => e.reason(),
        }
    }

    // Shared fixtures.

    #[test]
    fn current_healthy() {
        assert_eq!(
            read(shared("local-current-healthy.xml")).unwrap(),
            state("3f9a6b21-5c7d-4e8f-a012-b3c4d5e6f708", Some(90606), 0)
        );
    }

    #[test]
    fn legacy_proxy_auth() {
        // The janus/business uuid must not be taken for the connector id.
        let got = read(shared("local-legacy-proxy-auth.xml")).unwrap();
        assert_eq!(
            got,
            state(
                "0b8e2f3c-1d4a-4c6e-9f70-2a1b3c4d5e6f",
                Some(90600),
                4294965196
            )
        );
        assert_eq!(
            LastErrorMeaning::from_code(got.last_error),
            LastErrorMeaning::ProxyAuthFailed
        );
    }

    #[test]
    fn utf16_proxy_unreachable() {
        let got = read(shared("local-utf16-proxy-unreachable.xml")).unwrap();
        assert_eq!(
            got,
            state(
                "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
                Some(90598),
                4294965193
            )
        );
        assert_eq!(
            LastErrorMeaning::from_code(got.last_error),
            LastErrorMeaning::ProxyUnreachable
        );
    }

    #[test]
    fn truncated_is_malformed() {
        let err = read(shared("local-truncated.xml")).unwrap_err();
        assert_eq!(err.reason(), "malformed", "{err}");
    }

    #[test]
    fn policy_file_is_not_local_state() {
        assert_eq!(reason(read(shared("policy-proxy-basic.xml"))), "malformed");
    }

    // Own fixtures.

    #[test]
    fn utf8_with_bom_and_crlf() {
        assert_eq!(
            read(own("local-utf8-bom.xml")).unwrap(),
            state("5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b", Some(90604), 0)
        );
    }

    #[test]
    fn unknown_error_code_kept_raw() {
        let got = read(own("local-unknown-error.xml")).unwrap();
        assert_eq!(
            got,
            state("6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d", Some(90590), 12345)
        );
        assert_eq!(
            LastErrorMeaning::from_code(got.last_error),
            LastErrorMeaning::Unknown
        );
    }

    #[test]
    fn negative_lasterror_is_twos_complement() {
        let got = read(own("local-negative-lasterror.xml")).unwrap();
        assert_eq!(
            got,
            state(
                "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
                Some(90601),
                4294965187
            )
        );
        assert_eq!(
            LastErrorMeaning::from_code(got.last_error),
            LastErrorMeaning::ProxyDownloadFailed
        );
    }

    #[test]
    fn both_layouts_prefer_newer() {
        assert_eq!(
            read(own("local-both-layouts.xml")).unwrap(),
            state(
                "8c9d0e1f-2a3b-4c4d-9e5f-6a7b8c9d0e1f",
                Some(90606),
                4294965187
            )
        );
    }

    #[test]
    fn lasterror_under_other_tetra_parent() {
        assert_eq!(
            read(own("local-lasterror-other-parent.xml")).unwrap(),
            state(
                "9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a",
                Some(90603),
                4294965193
            )
        );
    }

    #[test]
    fn two_engines_take_largest_and_entities_are_unescaped() {
        assert_eq!(
            read(own("local-two-engines.xml")).unwrap(),
            state("0e1f2a3b-4c5d-4e6f-9a7b-8c9d0e1f2a3b", Some(90605), 0)
        );
    }

    #[test]
    fn bad_json_is_bad_value() {
        match read(own("local-bad-json.xml")) {
            Err(LocalStateError::BadValue { element, .. }) => assert_eq!(element, "definitions"),
            other => panic!("expected BadValue, got {other:?}"),
        }
    }

    #[test]
    fn wrong_root_is_malformed() {
        assert_eq!(reason(read(own("local-wrong-root.xml"))), "malformed");
    }

    #[test]
    fn empty_file_is_empty() {
        assert_eq!(reason(read(own("local-empty.xml"))), "empty");
    }

    // Generated inputs: encodings and emptiness.

    #[test]
    fn whitespace_or_bom_only_is_empty() {
        for input in [
            &b""[..],
            b" \r\n\t ",
            b"\xEF\xBB\xBF",
            b"\xEF\xBB\xBF\n",
            b"\xFF\xFE",
        ] {
            assert_eq!(reason(parse_local_state(input)), "empty", "{input:?}");
        }
    }

    #[test]
    fn utf16_big_endian_with_bom() {
        let text = with_tetra("<defversions>1:7</defversions>");
        let mut bytes = vec![0xFE, 0xFF];
        bytes.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(
            parse_local_state(&bytes).unwrap().definitions_version,
            Some(7)
        );
    }

    #[test]
    fn bad_encodings() {
        // Invalid UTF-8, odd-length and unpaired-surrogate UTF-16, UTF-16
        // without a mark.
        let mut unpaired = vec![0xFF, 0xFE];
        unpaired.extend("<config>".encode_utf16().flat_map(u16::to_le_bytes));
        unpaired.extend([0x00, 0xD8, b'<', 0x00]);
        let mut no_bom: Vec<u8> = Vec::new();
        no_bom.extend("<config/>".encode_utf16().flat_map(u16::to_le_bytes));
        let inputs: [&[u8]; 4] = [
            b"<config>\xC3\x28</config>",
            b"\xFF\xFE<\x00c",
            &unpaired,
            &no_bom,
        ];
        for input in inputs {
            assert_eq!(reason(parse_local_state(input)), "encoding", "{input:?}");
        }
    }

    // Generated inputs: structure.

    #[test]
    fn malformed_documents() {
        let cases = [
            "<config><agent></config>",
            "<config></agent></config>",
            "<config><agent><uuid>x</agent></uuid></config>",
            "<config>",
            "<config><agent><uuid>abc",
            "<?xml version=\"1.0\"?>",
            "<!-- only a comment -->",
            "not xml at all",
            "<config/><config/>",
            "<config/>trailing",
            "<config/>&amp;",
            "<config><uuid>&nbsp;</uuid></config>",
            "<config><uuid>&#0;</uuid></config>",
            "<config attr=novalue/>",
            "<config xmlns=\"http://www.w3.org/2000/09/xmldsig#\"/>",
            "<x:config xmlns:x=\"urn:x\"/>",
            "<Config/>",
            "<config><agent <uuid/></agent></config>",
            "<config><agent a=\"1\" a=\"2\"><uuid>x</uuid></agent></config>",
            "<config><agent><uuid b=unquoted>x</uuid></agent></config>",
        ];
        for case in cases {
            assert_eq!(reason(parse_str(case)), "malformed", "{case}");
        }
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        let depth = 10_000;
        let text = format!(
            "<config>{}{}</config>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        assert_eq!(reason(parse_str(&text)), "malformed");
    }

    #[test]
    fn bare_config_has_nothing() {
        let want = LocalState {
            connector_id: None,
            definitions_version: None,
            last_error: 0,
        };
        for text in [
            "<config/>",
            "<?xml version=\"1.0\"?>\n<config>\n</config>\n",
        ] {
            assert_eq!(parse_str(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn empty_elements_count_as_absent() {
        let text = "<config><agent><uuid> </uuid><engine><tetra><defversions/>\
                    <lasterror/></tetra><stats><definitions>\n</definitions></stats>\
                    </engine></agent></config>";
        assert_eq!(
            parse_str(text).unwrap(),
            LocalState {
                connector_id: None,
                definitions_version: None,
                last_error: 0
            }
        );
    }

    #[test]
    fn text_is_unescaped_and_trimmed() {
        let text = "<config><agent><uuid>\n a&amp;b&lt;&#x43;&#68;<![CDATA[<e>]]> </uuid>\
                    </agent></config>";
        assert_eq!(
            parse_str(text).unwrap().connector_id.as_deref(),
            Some("a&b<CD<e>")
        );
    }

    #[test]
    fn fields_only_at_their_paths() {
        // uuid, defversions and definitions at other paths are ignored.
        let text = "<config><uuid>root</uuid><agent><engine><uuid>e</uuid>\
                    <defversions>1:5</defversions><x><tetra><defversions>1:6</defversions>\
                    </tetra></x></engine><stats><definitions>junk</definitions></stats>\
                    </agent></config>";
        assert_eq!(
            parse_str(text).unwrap(),
            LocalState {
                connector_id: None,
                definitions_version: None,
                last_error: 0
            }
        );
    }

    #[test]
    fn lasterror_needs_a_tetra_parent() {
        let text = "<config><agent><engine><lasterror>5</lasterror><tetra><x>\
                    <lasterror>6</lasterror></x></tetra></engine></agent></config>";
        assert_eq!(parse_str(text).unwrap().last_error, 0);
    }

    #[test]
    fn first_lasterror_in_document_order_wins() {
        let text = "<config><agent><tetra><lasterror>12</lasterror></tetra><engine><tetra>\
                    <lasterror>34</lasterror></tetra></engine></agent></config>";
        assert_eq!(parse_str(text).unwrap().last_error, 12);
    }

    #[test]
    fn lasterror_values() {
        let cases = [
            ("0", 0),
            (" 4294965193 ", 4294965193),
            ("\n\t4294967295\r\n", u32::MAX),
            ("-2103", 4294965193),
            ("-2100", 4294965196),
            ("-2109", 4294965187),
            ("-1", u32::MAX),
            ("-0", 0),
            ("-2147483648", 2147483648),
            ("007", 7),
            ("", 0),
            ("  ", 0),
        ];
        for (text, want) in cases {
            assert_eq!(last_error_of(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn bad_lasterror_values() {
        for text in [
            "4294967296",
            "-2147483649",
            "+5",
            "0x10",
            "1.5",
            "abc",
            "1 2",
            "--1",
            "-",
            "1e3",
        ] {
            match last_error_of(text) {
                Err(LocalStateError::BadValue { element, .. }) => {
                    assert_eq!(element, "lasterror", "{text:?}")
                }
                other => panic!("{text:?}: expected BadValue, got {other:?}"),
            }
        }
    }

    #[test]
    fn defversions_values() {
        for (text, want) in [
            ("1:90606", 90606),
            ("a:b:42", 42),
            (" 1:7 ", 7),
            ("90606", 90606),
        ] {
            let doc = with_tetra(&format!("<defversions>{text}</defversions>"));
            assert_eq!(
                parse_str(&doc).unwrap().definitions_version,
                Some(want),
                "{text:?}"
            );
        }
        for text in [
            "1:",
            "1:abc",
            "1:-5",
            "1:+5",
            "90606:x",
            "1:99999999999999999999999",
        ] {
            let doc = with_tetra(&format!("<defversions>{text}</defversions>"));
            match parse_str(&doc) {
                Err(LocalStateError::BadValue { element, .. }) => {
                    assert_eq!(element, "defversions", "{text:?}")
                }
                other => panic!("{text:?}: expected BadValue, got {other:?}"),
            }
        }
    }

    fn definitions_doc(json: &str) -> String {
        format!(
            "<config><agent><engine><stats><definitions>{json}</definitions></stats>\
             <tetra><defversions>1:100</defversions></tetra></engine></agent></config>"
        )
    }

    #[test]
    fn definitions_json_values() {
        let cases = [
            (
                r#"{"engineDefinitions":[{"defVersion":"1:5"},{"defVersion":"2:9"}]}"#,
                9,
            ),
            (
                r#"{"engineDefinitions":[{"defVersion":"2:9"},{"defVersion":"1:5"}]}"#,
                9,
            ),
            (
                r#"{"other":1,"engineDefinitions":[{"defVersion":"3:90606","x":[]}]}"#,
                90606,
            ),
            // An empty list yields no version, so the older layout is used.
            (r#"{"engineDefinitions":[]}"#, 100),
        ];
        for (json, want) in cases {
            let got = parse_str(&definitions_doc(json))
                .unwrap()
                .definitions_version;
            assert_eq!(got, Some(want), "{json}");
        }
    }

    #[test]
    fn bad_definitions_json() {
        let cases = [
            "not json",
            "[]",
            "{}",
            r#"{"engineDefinitions":{}}"#,
            r#"{"engineDefinitions":[{}]}"#,
            r#"{"engineDefinitions":[{"defVersion":90606}]}"#,
            r#"{"engineDefinitions":[{"defVersion":"1:5"},{"defVersion":"1:x"}]}"#,
            r#"{"engineDefinitions":[{"defVersion":"1:5"}]} trailing"#,
        ];
        for json in cases {
            match parse_str(&definitions_doc(json)) {
                Err(LocalStateError::BadValue { element, .. }) => {
                    assert_eq!(element, "definitions", "{json}")
                }
                other => panic!("{json}: expected BadValue, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_value_message_is_bounded() {
        let long = "x".repeat(10_000);
        match last_error_of(&long) {
            Err(e @ LocalStateError::BadValue { .. }) => assert!(e.to_string().len() < 200),
            other => panic!("expected BadValue, got {other:?}"),
        }
    }

    // Reading files.

    #[test]
    fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_local_state(&dir.path().join("local.xml"), DEFAULT_MAX_BYTES).unwrap_err();
        assert_eq!(err.reason(), "not_found");
    }

    #[test]
    fn directory_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            reason(read_local_state(dir.path(), DEFAULT_MAX_BYTES)),
            "unreadable"
        );
    }

    #[test]
    fn size_cap() {
        let text = with_tetra("<lasterror>0</lasterror>");
        let len = text.len() as u64;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.flush().unwrap();

        let (got, mtime) = read_local_state(file.path(), len).unwrap();
        assert_eq!(got.last_error, 0);
        assert_eq!(
            mtime,
            file.as_file().metadata().unwrap().modified().unwrap()
        );

        match read_local_state(file.path(), len - 1) {
            Err(LocalStateError::TooLarge { limit }) => assert_eq!(limit, len - 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(read_local_state(file.path(), u64::MAX).unwrap().0, got);
    }

    #[test]
    fn huge_file_is_too_large() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&vec![b' '; DEFAULT_MAX_BYTES as usize + 4096])
            .unwrap();
        file.flush().unwrap();
        assert_eq!(
            reason(read_local_state(file.path(), DEFAULT_MAX_BYTES)),
            "too_large"
        );
    }

    // Fixed strings.

    #[test]
    fn reasons() {
        let io = || std::io::Error::other("x");
        let cases = [
            (LocalStateError::NotFound, "not_found"),
            (LocalStateError::Unreadable(io()), "unreadable"),
            (LocalStateError::TooLarge { limit: 1 }, "too_large"),
            (LocalStateError::Empty, "empty"),
            (LocalStateError::Encoding(String::new()), "encoding"),
            (LocalStateError::Malformed(String::new()), "malformed"),
            (
                LocalStateError::BadValue {
                    element: "lasterror",
                    value: String::new(),
                },
                "bad_value",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.reason(), want);
        }
    }

    #[test]
    fn last_error_meanings() {
        let cases = [
            (0, LastErrorMeaning::None, "none"),
            (
                4294965193,
                LastErrorMeaning::ProxyUnreachable,
                "proxy_unreachable",
            ),
            (
                4294965196,
                LastErrorMeaning::ProxyAuthFailed,
                "proxy_auth_failed",
            ),
            (
                4294965187,
                LastErrorMeaning::ProxyDownloadFailed,
                "proxy_download_failed",
            ),
            (1, LastErrorMeaning::Unknown, "unknown"),
            (u32::MAX, LastErrorMeaning::Unknown, "unknown"),
        ];
        for (code, meaning, label) in cases {
            assert_eq!(LastErrorMeaning::from_code(code), meaning, "{code}");
            assert_eq!(meaning.as_str(), label);
        }
        // The signed spellings Cisco quotes map to the same meanings.
        assert_eq!(
            LastErrorMeaning::from_code((-2103i32).cast_unsigned()),
            LastErrorMeaning::ProxyUnreachable
        );
    }
}
