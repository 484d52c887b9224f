//! How `intentmap cloud` prints: aligned tables for people, JSON and YAML for programs, as
//! `kubectl` users expect.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Text from the cloud with control characters replaced, so an answer cannot drive the terminal.
pub fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A table with a header row, columns padded to their widest cell and three spaces apart.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table { rows: vec![header.iter().map(|h| h.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| clean(c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// How long ago `t` was, as kubectl's AGE column writes it: `45s`, `12m`, `5h`, `3d`.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A value as indented JSON with a final newline.
pub fn json(value: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// A value as YAML.
pub fn yaml(value: &Value) -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_ages_read_like_kubectl() {
        let mut t = Table::new(&["NAME", "ID", "AGE"]);
        t.row(vec!["prod".into(), "1234".into(), "5m".into()]);
        t.row(vec!["staging-eu".into(), "7".into(), "3d".into()]);
        assert_eq!(
            t.render(),
            "NAME         ID     AGE\nprod         1234   5m\nstaging-eu   7      3d\n"
        );
        let now: DateTime<Utc> = "2026-12-06T00:00:00Z".parse().unwrap();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(
            (ago(5), ago(600), ago(3 * 3600), ago(4 * 86_400)),
            ("5s".into(), "10m".into(), "3h".into(), "4d".into())
        );
        assert_eq!(ago(-30), "0s", "a clock ahead of ours is not a negative age");
        assert_eq!(clean("a\u{1b}[31mb\n"), "a?[31mb?");
    }
}
