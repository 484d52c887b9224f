//! The Prometheus text exposition format (version 0.0.4), as Envoy serves it on
//! `/stats/prometheus`: `name{label="value",...} value [timestamp]` lines, `#` comments.
//!
//! Label values are unescaped (`\\`, `\"`, `\n`); anything that does not follow the grammar is
//! an error for that line only.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// In the order given.
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_ref())
    }

    /// The series' identity: a hash of its name and labels, sorted, each with its length (so a
    /// value holding what looks like another label does not collide). Keyed by `state`: with a
    /// [`std::hash::RandomState`], nobody outside the process can aim at a collision.
    pub fn series_hash(&self, state: &impl BuildHasher) -> u64 {
        let mut labels: Vec<&(&str, Cow<'_, str>)> = self.labels.iter().collect();
        labels.sort_by(|a, b| a.0.cmp(b.0));
        let mut hasher = state.build_hasher();
        hasher.write(self.name.as_bytes());
        for (name, value) in labels {
            hasher.write_usize(name.len());
            hasher.write(name.as_bytes());
            hasher.write_usize(value.len());
            hasher.write(value.as_bytes());
        }
        hasher.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    BadName,
    BadLabel,
    UnterminatedValue,
    BadEscape,
    BadValue,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::BadName => "not a metric name",
            ParseError::BadLabel => "malformed label",
            ParseError::UnterminatedValue => "unterminated label value",
            ParseError::BadEscape => "unknown escape in a label value",
            ParseError::BadValue => "not a sample value",
        })
    }
}

/// Every line of `text`: `Ok(None)` for blank lines and comments.
pub fn lines(text: &str) -> impl Iterator<Item = Result<Option<Sample<'_>>, ParseError>> {
    text.lines().map(parse_line)
}

/// One line.
pub fn parse_line(line: &str) -> Result<Option<Sample<'_>>, ParseError> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(ParseError::BadName);
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let label_end =
                rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let label = &rest[..label_end];
            if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(ParseError::BadLabel);
            }
            rest = rest[label_end..]
                .trim_start()
                .strip_prefix('=')
                .ok_or(ParseError::BadLabel)?
                .trim_start();
            rest = rest.strip_prefix('"').ok_or(ParseError::BadLabel)?;
            let (value, after) = label_value(rest)?;
            labels.push((label, value));
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(ParseError::BadLabel);
            }
        }
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(ParseError::BadValue);
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or(ParseError::BadValue)?;
    let value = parse_value(value).ok_or(ParseError::BadValue)?;
    // An optional timestamp (milliseconds), then nothing.
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| ParseError::BadValue)?;
    }
    if fields.next().is_some() {
        return Err(ParseError::BadValue);
    }
    Ok(Some(Sample { name, labels, value }))
}

/// The value after an opening `"`, up to the closing one; the rest after it.
fn label_value(s: &str) -> Result<(Cow<'_, str>, &str), ParseError> {
    let mut owned: Option<String> = None;
    let mut chars = s.char_indices();
    let mut plain_end = 0;
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => {
                let value = match owned {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(&s[..at]),
                };
                return Ok((value, &s[at + 1..]));
            }
            '\\' => {
                let buffer = owned.get_or_insert_with(|| s[..plain_end].to_owned());
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => buffer.push('\\'),
                    Some('"') => buffer.push('"'),
                    Some('n') => buffer.push('\n'),
                    _ => return Err(ParseError::BadEscape),
                }
            }
            c => match &mut owned {
                Some(buffer) => buffer.push(c),
                None => plain_end = at + c.len_utf8(),
            },
        }
    }
    Err(ParseError::UnterminatedValue)
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text = "# HELP envoy_server_uptime\n# TYPE envoy_server_uptime gauge\nenvoy_server_uptime{} 4193\n\n\
            istio_requests_total{reporter=\"destination\",request_path=\"/a\\\"b\\\\c\\nd\",empty=\"\"} 12 1700000000000\n\
            up 1e3\nnan_gauge NaN\n";
        let samples: Vec<Sample<'_>> = lines(text).filter_map(|l| l.unwrap()).collect();
        assert_eq!(samples.len(), 4);
        assert_eq!(
            (samples[0].name, samples[0].value, samples[0].labels.len()),
            ("envoy_server_uptime", 4193.0, 0)
        );
        assert_eq!(samples[1].label("reporter"), Some("destination"));
        assert_eq!(samples[1].label("request_path"), Some("/a\"b\\c\nd"));
        assert_eq!(samples[1].label("empty"), Some(""));
        assert_eq!(samples[1].value, 12.0);
        assert_eq!(samples[2].value, 1000.0);
        assert!(samples[3].value.is_nan());
    }

    #[test]
    fn the_series_hash_ignores_label_order() {
        let state = std::hash::RandomState::new();
        let a = parse_line("m{a=\"1\",b=\"2\"} 1").unwrap().unwrap();
        let b = parse_line("m{b=\"2\",a=\"1\"} 5").unwrap().unwrap();
        let c = parse_line("m{a=\"1\",b=\"3\"} 1").unwrap().unwrap();
        assert_eq!(a.series_hash(&state), b.series_hash(&state));
        assert_ne!(a.series_hash(&state), c.series_hash(&state));
        // A value holding what looks like another label does not collide.
        let d = parse_line("m{a=\"1\\\",b=\\\"2\"} 1").unwrap().unwrap();
        assert_ne!(a.series_hash(&state), d.series_hash(&state));
    }

    #[test]
    fn malformed_lines_are_errors() {
        for (line, error) in [
            ("m{a=\"1\"", ParseError::BadLabel),
            ("m{a=\"1} 2", ParseError::UnterminatedValue),
            ("m{a=1} 2", ParseError::BadLabel),
            ("m{=\"1\"} 2", ParseError::BadLabel),
            ("m{a=\"\\x\"} 2", ParseError::BadEscape),
            ("m{a=\"1\" b=\"2\"} 2", ParseError::BadLabel),
            ("m 12abc", ParseError::BadValue),
            ("m", ParseError::BadValue),
            ("m 1 2 3", ParseError::BadValue),
            ("9m 1", ParseError::BadName),
            ("{a=\"1\"} 1", ParseError::BadName),
        ] {
            assert_eq!(parse_line(line), Err(error), "{line:?}");
        }
        assert_eq!(parse_line("m{} 2").unwrap().unwrap().value, 2.0);
        assert_eq!(
            parse_line("m{a=\"1\",} 2").unwrap().unwrap().labels.len(),
            1,
            "a trailing comma is allowed"
        );
    }

    /// Mutations of a real Envoy line (fixed seed) never panic.
    #[test]
    fn mutated_lines_never_panic() {
        let seed = "istio_requests_total{reporter=\"destination\",source_workload=\"frontend\",request_path=\"/a\\\"b\",response_code=\"200\"} 42";
        let alphabet = "{}=\",\\n 0123456789.eE+-#aZ_:é\t";
        let mut parsed = 0;
        for line in crate::tests::mutations(&[seed], alphabet, 20_000, 4, 0x2545_F491_4F6C_DD1D) {
            if let Ok(Some(sample)) = parse_line(&line) {
                parsed += 1;
                let _ = sample.series_hash(&std::hash::RandomState::new());
            }
        }
        assert!(parsed > 1_000, "many mutations still parse ({parsed})");
    }
}
