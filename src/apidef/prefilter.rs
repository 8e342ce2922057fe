//! Which of a version's path patterns can match a path, found without
//! running them: each pattern's required literals (regex-syntax's prefix
//! extraction: every match starts with one of them, so a path holding none
//! of them cannot match, however the pattern is anchored or cased), all in
//! one Aho-Corasick automaton. One scan of the path leaves a few candidate
//! patterns to run; a pattern that is nothing but a literal (or an
//! alternation of literals, no anchors) is decided by the scan alone.
//!
//! What it leaves out: deciding anything. It only narrows which patterns
//! the endpoint rules run, in their own order (`endpoints`). A pattern
//! without usable literals (`.*` first, a class too wide, a literal that
//! could be empty) is always a candidate.

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::hir::literal::Extractor;

/// What a scan found, by pattern index: `sure` matched (by its literal
/// alone), `maybe` must still run its regex.
pub struct Hits<'a> {
    pub sure: &'a [u64],
    pub maybe: &'a [u64],
}

impl Hits<'_> {
    /// Every candidate's index, in increasing order, and whether the scan
    /// alone decided it matched.
    pub fn candidates(&self) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.sure
            .iter()
            .zip(self.maybe)
            .enumerate()
            .flat_map(|(w, (&sure, &maybe))| {
                let mut left = sure | maybe;
                std::iter::from_fn(move || {
                    (left != 0).then(|| {
                        let bit = left.trailing_zeros();
                        left &= left - 1;
                        (w * 64 + bit as usize, sure >> bit & 1 == 1)
                    })
                })
            })
    }
}

/// The automaton over every pattern's literals.
#[derive(Clone, Debug)]
pub struct Prefilter {
    /// None: no pattern has literals (or the automaton could not be
    /// built); every pattern is a candidate.
    ac: Option<AhoCorasick>,
    /// Literal id → (pattern index, decisive).
    owner: Vec<(usize, bool)>,
    /// Patterns without literals: always candidates.
    always: Vec<u64>,
}

/// A pattern's literals: every match starts with one; `decisive`: every
/// literal is a whole match, so finding one is a match.
struct Needles {
    literals: Vec<Vec<u8>>,
    decisive: bool,
}

impl Needles {
    /// None: no literal narrows this pattern.
    fn of(regex: &str) -> Option<Needles> {
        let hir = regex_syntax::parse(regex).ok()?;
        let seq = Extractor::new().extract(&hir);
        let literals = seq.literals()?;
        if literals.is_empty() || literals.iter().any(|l| l.is_empty()) {
            return None;
        }
        let props = hir.properties();
        let decisive =
            seq.is_exact() && props.is_alternation_literal() && props.look_set().is_empty();
        Some(Needles {
            literals: literals.iter().map(|l| l.as_bytes().to_vec()).collect(),
            decisive,
        })
    }
}

impl Prefilter {
    /// Over `patterns` (regexes as the `regex` crate compiles them).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Prefilter {
        let (mut literals, mut owner, mut always) = (Vec::new(), Vec::new(), Vec::new());
        let mut count = 0;
        for (i, p) in patterns.into_iter().enumerate() {
            count = i + 1;
            match Needles::of(p) {
                Some(n) => {
                    owner.extend(n.literals.iter().map(|_| (i, n.decisive)));
                    literals.extend(n.literals);
                }
                None => always.push(i),
            }
        }
        let mut bits = vec![0; count.div_ceil(64)];
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&literals)
            .ok()
            .filter(|_| !literals.is_empty());
        if ac.is_none() {
            always = (0..count).collect();
        }
        for i in always {
            bits[i / 64] |= 1 << (i % 64);
        }
        Prefilter {
            ac,
            owner,
            always: bits,
        }
    }

    /// Words of 64 patterns each, for `scan`'s bit sets.
    pub fn words(&self) -> usize {
        self.always.len()
    }

    /// Marks in `sure` and `maybe` (each `words()` long, zeroed) the
    /// patterns that can match any of `paths`.
    pub fn scan<'p, 'b>(
        &self,
        paths: impl IntoIterator<Item = &'p str>,
        sure: &'b mut [u64],
        maybe: &'b mut [u64],
    ) -> Hits<'b> {
        maybe.copy_from_slice(&self.always);
        if let Some(ac) = &self.ac {
            for path in paths {
                for m in ac.find_overlapping_iter(path) {
                    let (i, decisive) = self.owner[m.pattern().as_usize()];
                    let bits = if decisive { &mut *sure } else { &mut *maybe };
                    bits[i / 64] |= 1 << (i % 64);
                }
            }
        }
        Hits { sure, maybe }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    /// Tyk-like path patterns, raw regexes among them.
    const PATTERNS: &[&str] = &[
        "/items/([^/]+)",
        "/items",
        "(?i)/items",
        "(?i)/kelvin",
        "^/items$",
        "^/a/",
        "/a|/b/c",
        "/users/\\d+",
        "/.*",
        ".*",
        "x*",
        "/files/[^/]+/raw",
        "/v[12]/thing",
        "(?i)/resource1/([^/]+)",
        "\\bword\\b",
        "/caf\u{e9}",
        "(?i)/stra\u{df}e",
        "[^\\s\\S]",
        "/(a|b)c(d|e)/",
        "health$",
        "/ab?c",
    ];

    fn paths() -> Vec<String> {
        let segments = [
            "",
            "items",
            "ITEMS",
            "Items",
            "42",
            "a",
            "b",
            "c",
            "ac",
            "bcd",
            "bce",
            "v1",
            "v3",
            "thing",
            "users",
            "12",
            "x",
            "files",
            "raw",
            "word",
            "words",
            "\u{212a}elvin",
            "kelvin",
            "caf\u{e9}",
            "CAF\u{c9}",
            "stra\u{df}e",
            "STRASSE",
            "health",
            "abc",
            "ab",
            "resource1",
            "RESOURCE1",
        ];
        super::super::glob::tests::paths_of(&segments, &["", "raw", "items", "42"])
    }

    /// The prefilter against each regex run alone, on every path: a
    /// pattern left out must not match, a sure one must.
    #[test]
    fn never_drops_a_match_nor_claims_a_miss() {
        let regexes: Vec<Regex> = PATTERNS.iter().map(|p| Regex::new(p).unwrap()).collect();
        let f = Prefilter::new(PATTERNS.iter().copied());
        let (mut checked_sure, mut skipped) = (0, 0);
        for path in paths() {
            let (mut sure, mut maybe) = (vec![0; f.words()], vec![0; f.words()]);
            let hits = f.scan([path.as_str()], &mut sure, &mut maybe);
            let found: Vec<(usize, bool)> = hits.candidates().collect();
            for (i, rx) in regexes.iter().enumerate() {
                let candidate = found.iter().find(|(j, _)| *j == i);
                match candidate {
                    None => {
                        skipped += 1;
                        assert!(!rx.is_match(&path), "{:?} dropped on {path:?}", rx.as_str());
                    }
                    Some((_, true)) => {
                        checked_sure += 1;
                        assert!(rx.is_match(&path), "{:?} claimed on {path:?}", rx.as_str());
                    }
                    Some((_, false)) => {}
                }
            }
        }
        // The test means something only if both shortcuts were taken.
        assert!(
            checked_sure > 100 && skipped > 1000,
            "{checked_sure} {skipped}"
        );
    }

    #[test]
    fn literal_patterns_are_decisive_others_not() {
        let decisive = |p: &str| Needles::of(p).map(|n| n.decisive);
        assert_eq!(decisive("/items"), Some(true));
        assert_eq!(decisive("/a|/b/c"), Some(true));
        assert_eq!(decisive("^/items"), Some(false));
        assert_eq!(decisive("(?i)/items"), Some(false));
        assert_eq!(decisive("/items/([^/]+)"), Some(false));
        assert_eq!(decisive(".*"), None);
        assert_eq!(decisive("x*"), None);
    }

    #[test]
    fn many_patterns_span_several_words() {
        let patterns: Vec<String> = (0..150).map(|i| format!("/r{i}/")).collect();
        let f = Prefilter::new(patterns.iter().map(String::as_str));
        assert_eq!(f.words(), 3);
        let (mut sure, mut maybe) = (vec![0; 3], vec![0; 3]);
        let hits = f.scan(["/x/r130/y", "/r7/"], &mut sure, &mut maybe);
        let found: Vec<(usize, bool)> = hits.candidates().collect();
        assert_eq!(found, vec![(7, true), (130, true)]);
    }
}
