//! The report a scenario prints: labelled numbers, tables, latency histograms, the
//! invariant checks, and one verdict line.
//!
//! The checks are the point. A scenario states each invariant it holds as a
//! [`Report::check`] with the measured numbers in its text ("admitted 412 ≤ bound 415"),
//! and the verdict passes only when every check does. So `mini demo` and the tests
//! judge a run by the same lines, and `mini demo` exits non-zero on a failed check.
//!
//! ```
//! use exercises::framework::Report;
//! let mut report = Report::new("demo", "an example");
//! report.line("clients", 100);
//! report.check(412 <= 415, "admitted 412 <= bound 415");
//! report.verdict("the bucket never over-admits");
//! assert!(report.passed());
//! assert!(report.to_string().contains("verdict: PASS"));
//! ```

use std::fmt;

use super::histogram::LatencyHistogram;

/// Labels are padded to this width so the values line up.
const LABEL_WIDTH: usize = 28;

/// One invariant, as measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub passed: bool,
    /// What was checked, with the numbers.
    pub what: String,
}

#[derive(Clone, Debug)]
enum Item {
    Line { label: String, value: String },
    Section(String),
    Text(String),
    Table { headers: Vec<String>, rows: Vec<Vec<String>> },
    Histogram { label: String, summary: String, bars: Vec<String> },
}

/// A scenario's measured report.
#[derive(Clone, Debug)]
pub struct Report {
    /// The exercise's name (`token-bucket`).
    pub exercise: String,
    pub title: String,
    items: Vec<Item>,
    checks: Vec<Check>,
    verdict: Option<String>,
}

impl Report {
    pub fn new(exercise: impl Into<String>, title: impl Into<String>) -> Report {
        Report { exercise: exercise.into(), title: title.into(), items: Vec::new(), checks: Vec::new(), verdict: None }
    }

    /// `label   value`.
    pub fn line(&mut self, label: impl Into<String>, value: impl fmt::Display) -> &mut Self {
        self.items.push(Item::Line { label: label.into(), value: value.to_string() });
        self
    }

    /// A heading that starts a new part of the report ("without protection").
    pub fn section(&mut self, heading: impl Into<String>) -> &mut Self {
        self.items.push(Item::Section(heading.into()));
        self
    }

    /// A free line of text (a timeline entry, an explanation).
    pub fn text(&mut self, text: impl Into<String>) -> &mut Self {
        self.items.push(Item::Text(text.into()));
        self
    }

    /// A table; every row must have as many cells as there are headers.
    pub fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>) -> &mut Self {
        for row in &rows {
            assert_eq!(row.len(), headers.len(), "a table row has {} cells for {} headers", row.len(), headers.len());
        }
        self.items.push(Item::Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows });
        self
    }

    /// The histogram's percentiles and bars, as they are now.
    pub fn histogram(&mut self, label: impl Into<String>, histogram: &mut LatencyHistogram) -> &mut Self {
        self.items.push(Item::Histogram { label: label.into(), summary: histogram.summary(), bars: histogram.bars() });
        self
    }

    /// Records an invariant check; returns `passed` so a scenario can branch on it.
    pub fn check(&mut self, passed: bool, what: impl Into<String>) -> bool {
        self.checks.push(Check { passed, what: what.into() });
        passed
    }

    /// The verdict line's text: what the run shows, in one sentence.
    pub fn verdict(&mut self, text: impl Into<String>) -> &mut Self {
        self.verdict = Some(text.into());
        self
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// Whether the run holds: at least one check, and every check passed. A report with
    /// no checks fails, because a scenario that asserts nothing proves nothing.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The value of the first line labelled `label`, for tests that read a number back.
    pub fn value(&self, label: &str) -> Option<&str> {
        self.items.iter().find_map(|item| match item {
            Item::Line { label: l, value } if l == label => Some(value.as_str()),
            _ => None,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== {}: {} ==", self.exercise, self.title)?;
        for item in &self.items {
            match item {
                Item::Line { label, value } => writeln!(f, "{label:<LABEL_WIDTH$} {value}")?,
                Item::Section(heading) => writeln!(f, "\n-- {heading} --")?,
                Item::Text(text) => writeln!(f, "{text}")?,
                Item::Table { headers, rows } => write_table(f, headers, rows)?,
                Item::Histogram { label, summary, bars } => {
                    writeln!(f, "{label:<LABEL_WIDTH$} {summary}")?;
                    for bar in bars {
                        writeln!(f, "  {bar}")?;
                    }
                }
            }
        }
        writeln!(f)?;
        for check in &self.checks {
            writeln!(f, "check {}  {}", if check.passed { "ok  " } else { "FAIL" }, check.what)?;
        }
        let passed_count = self.checks.iter().filter(|c| c.passed).count();
        let word = if self.passed() { "PASS" } else { "FAIL" };
        write!(f, "verdict: {word} ({passed_count}/{} checks)", self.checks.len())?;
        match &self.verdict {
            Some(text) => writeln!(f, ": {text}"),
            None => writeln!(f),
        }
    }
}

fn write_table(f: &mut fmt::Formatter<'_>, headers: &[String], rows: &[Vec<String>]) -> fmt::Result {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = width - cell.chars().count();
            // Numbers right-aligned, words left-aligned.
            if cell.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-') && i > 0 {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        writeln!(f, "  {}", text.trim_end())
    };
    line(f, headers)?;
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(f, &rule)?;
    for row in rows {
        line(f, row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_without_checks_fails() {
        let report = Report::new("x", "nothing asserted");
        assert!(!report.passed());
        assert!(report.to_string().contains("verdict: FAIL (0/0 checks)"));
    }

    #[test]
    fn one_failed_check_fails_the_verdict() {
        let mut report = Report::new("x", "y");
        report.check(true, "a");
        report.check(false, "b");
        assert!(!report.passed());
        assert_eq!(report.failures().count(), 1);
        let text = report.to_string();
        assert!(text.contains("check FAIL  b"), "{text}");
        assert!(text.contains("verdict: FAIL (1/2 checks)"), "{text}");
    }

    #[test]
    fn tables_and_values_render() {
        let mut report = Report::new("x", "y");
        report.line("origin loads", 1);
        report.table(&["mode", "p99"], vec![vec!["protected".into(), "1.2ms".into()]]);
        assert_eq!(report.value("origin loads"), Some("1"));
        let text = report.to_string();
        assert!(text.contains("protected"), "{text}");
    }
}
