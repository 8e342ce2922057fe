//! Path patterns of the shape Tyk's rewriting produces, matched without a
//! regex engine: a literal first, then literals, `([^/]+)` / `[^/]+` (a
//! segment, always followed by a `/` literal or the end), `\d+` / `[0-9]+`
//! (digits), and a last `(.*)` / `.*`, with `^` and `$` anchors. In that
//! shape every piece after the first literal has exactly one way to match
//! (a segment or a digit run takes all it can, and what follows cannot
//! start inside it), so a match is found by trying each place the first
//! literal occurs, leftmost first: the `regex` crate's match, its groups
//! included.
//!
//! What it leaves out: anything else (case-insensitive patterns, classes,
//! alternations, repetitions of literals) stays a regex, and so does a
//! digit run next to a non-ASCII character (`\d` is Unicode's): then the
//! caller asks the regex (`Found::Unsure`).

/// One piece after the first literal.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    /// `[^/]+`; true: a group.
    Segment(bool),
    /// `\d+` (Unicode) or `[0-9]+` (ASCII only: `ascii`).
    Digits {
        group: bool,
        ascii: bool,
    },
    /// `.*`, last.
    Rest(bool),
}

/// A pattern in the shape above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    start: bool,
    end: bool,
    first: String,
    pieces: Vec<Piece>,
    groups: usize,
}

/// What matching found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    No,
    /// The whole match's span, then each group's.
    Yes(Spans),
    /// Not decidable here: ask the regex.
    Unsure,
}

/// Spans of the match (index 0) and its groups, as byte ranges.
pub type Spans = Vec<(usize, usize)>;

/// The pieces' spellings, longest first where one begins another.
const SPELLINGS: [(&str, Piece); 8] = [
    ("([^/]+)", Piece::Segment(true)),
    ("[^/]+", Piece::Segment(false)),
    (
        "(\\d+)",
        Piece::Digits {
            group: true,
            ascii: false,
        },
    ),
    (
        "\\d+",
        Piece::Digits {
            group: false,
            ascii: false,
        },
    ),
    (
        "([0-9]+)",
        Piece::Digits {
            group: true,
            ascii: true,
        },
    ),
    (
        "[0-9]+",
        Piece::Digits {
            group: false,
            ascii: true,
        },
    ),
    ("(.*)", Piece::Rest(true)),
    (".*", Piece::Rest(false)),
];

/// Characters that mean something in a regex outside a class.
fn is_meta(c: char) -> bool {
    "\\.+*?()|[]{}^$".contains(c)
}

impl Glob {
    /// `regex` in the shape above, or None.
    pub fn parse(regex: &str) -> Option<Glob> {
        let (start, mut rest) = match regex.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, regex),
        };
        let mut end = false;
        let mut pieces: Vec<Piece> = Vec::new();
        while !rest.is_empty() {
            if rest == "$" {
                end = true;
                break;
            }
            if let Some((spelling, piece)) = SPELLINGS.iter().find(|(s, _)| rest.starts_with(s)) {
                pieces.push(piece.clone());
                rest = &rest[spelling.len()..];
                continue;
            }
            let lit = rest.find(is_meta).unwrap_or(rest.len());
            if lit == 0 {
                return None;
            }
            match pieces.last_mut() {
                Some(Piece::Lit(l)) => l.push_str(&rest[..lit]),
                _ => pieces.push(Piece::Lit(rest[..lit].to_string())),
            }
            rest = &rest[lit..];
        }
        let Some(Piece::Lit(first)) = pieces.first().cloned() else {
            return None;
        };
        pieces.remove(0);
        // Each run is followed by what cannot continue it: the end, or a
        // literal starting with `/` (a segment) or with a non-digit.
        for (i, p) in pieces.iter().enumerate() {
            let next = pieces.get(i + 1);
            let ok = match (p, next) {
                (Piece::Lit(_), _) | (_, None) => true,
                (Piece::Rest(_), Some(_)) => false,
                (Piece::Segment(_), Some(Piece::Lit(l))) => l.starts_with('/'),
                (Piece::Digits { .. }, Some(Piece::Lit(l))) => {
                    !l.starts_with(|c: char| c.is_ascii_digit())
                }
                _ => false,
            };
            if !ok {
                return None;
            }
        }
        let groups = pieces
            .iter()
            .filter(|p| {
                matches!(
                    p,
                    Piece::Segment(true) | Piece::Digits { group: true, .. } | Piece::Rest(true)
                )
            })
            .count();
        Some(Glob {
            start,
            end,
            first,
            pieces,
            groups,
        })
    }

    /// Groups, besides the whole match.
    #[cfg(test)]
    fn groups(&self) -> usize {
        self.groups
    }

    /// The leftmost match in `hay`, with its groups.
    pub fn find(&self, hay: &str) -> Found {
        let mut spans = Vec::with_capacity(1 + self.groups);
        match self.search(hay, Some(&mut spans)) {
            Some(true) => Found::Yes(spans),
            Some(false) => Found::No,
            None => Found::Unsure,
        }
    }

    /// Whether `hay` matches anywhere (None: ask the regex).
    pub fn is_match(&self, hay: &str) -> Option<bool> {
        self.search(hay, None)
    }

    /// Tries each place the first literal is, leftmost first; fills
    /// `spans` with the match's (None: ask the regex).
    fn search(&self, hay: &str, mut spans: Option<&mut Spans>) -> Option<bool> {
        if self.start {
            return match hay.starts_with(self.first.as_str()) {
                true => self.at(hay, 0, spans),
                false => Some(false),
            };
        }
        // Paths are short: a byte search and a comparison beat a substring
        // searcher's set-up.
        let (bytes, lead) = (hay.as_bytes(), self.first.as_bytes()[0]);
        let mut from = 0;
        while let Some(at) = memchr::memchr(lead, &bytes[from..]).map(|i| from + i) {
            if bytes[at..].starts_with(self.first.as_bytes()) {
                match self.at(hay, at, spans.as_deref_mut()) {
                    Some(false) => {}
                    found => return found,
                }
            }
            // The first literal's lead byte starts a character.
            from = at + 1;
        }
        Some(false)
    }

    /// Whether the pattern matches at `at`, where the first literal is.
    fn at(&self, hay: &str, at: usize, mut spans: Option<&mut Spans>) -> Option<bool> {
        let bytes = hay.as_bytes();
        let mut pos = at + self.first.len();
        if let Some(s) = spans.as_deref_mut() {
            s.clear();
            s.push((at, at));
        }
        for p in &self.pieces {
            let (len, group) = match p {
                Piece::Lit(l) => {
                    if !bytes[pos..].starts_with(l.as_bytes()) {
                        return Some(false);
                    }
                    (l.len(), false)
                }
                Piece::Segment(group) => {
                    let n = bytes[pos..].iter().take_while(|&&b| b != b'/').count();
                    if n == 0 {
                        return Some(false);
                    }
                    (n, *group)
                }
                Piece::Digits { group, ascii } => {
                    let n = bytes[pos..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    // A Unicode digit may go on where the ASCII ones stop.
                    if !ascii && bytes.get(pos + n).is_some_and(|b| !b.is_ascii()) {
                        return None;
                    }
                    if n == 0 {
                        return Some(false);
                    }
                    (n, *group)
                }
                Piece::Rest(group) => {
                    let n = bytes[pos..].iter().take_while(|&&b| b != b'\n').count();
                    (n, *group)
                }
            };
            if group && let Some(s) = spans.as_deref_mut() {
                s.push((pos, pos + len));
            }
            pos += len;
        }
        if self.end && pos != hay.len() {
            return Some(false);
        }
        if let Some(s) = spans {
            s[0].1 = pos;
        }
        Some(true)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use regex::Regex;

    const PATTERNS: &[&str] = &[
        "/items/([^/]+)",
        "^/items/([^/]+)$",
        "/items/([^/]+)/raw",
        "/a/[^/]+/b/([^/]+)$",
        "/real/items/(\\d+)",
        "/real/items/(\\d+)$",
        "^/n/([0-9]+)/x",
        "/files/.*",
        "^/files/(.*)$",
        "/files/(.*)",
        "/items",
        "^/items$",
        "/caf\u{e9}/([^/]+)",
        "/a/a",
        "aa",
        "/x-y_z~1/",
    ];

    const NOT_GLOBS: &[&str] = &[
        "(?i)/items",
        "/a|/b",
        "/items/([^/]+)([^/]+)",
        "/a/([^/]+)x",
        "/a/(\\d+)7",
        "/a/.*/b",
        "([^/]+)/a",
        "/a+",
        "/a.b",
        "/v[12]",
        "",
        "$",
    ];

    fn paths() -> Vec<String> {
        let segments = [
            "",
            "items",
            "42",
            "4\u{663}2",
            "\u{663}",
            "4x",
            "raw",
            "real",
            "a",
            "aa",
            "b",
            "files",
            "n",
            "x",
            "caf\u{e9}",
            "x-y_z~1",
            "line\nbreak",
            "\u{e9}",
        ];
        paths_of(&segments, &segments)
    }

    /// Paths of one to three of `segments` (the third from `thirds`),
    /// with and without leading and trailing slashes.
    pub(in crate::apidef) fn paths_of(segments: &[&str], thirds: &[&str]) -> Vec<String> {
        let mut out = vec![String::new(), "/".into()];
        for a in segments {
            out.push(format!("/{a}"));
            out.push(a.to_string());
            for b in segments {
                out.extend([
                    format!("/{a}/{b}"),
                    format!("/{a}/{b}/"),
                    format!("{a}/{b}"),
                ]);
                out.push(format!("{a}/{b}/"));
                for c in thirds {
                    out.push(format!("/{a}/{b}/{c}"));
                    out.push(format!("/x/{a}/{b}/{c}/raw"));
                }
            }
        }
        out
    }

    /// Against the regex crate on every path: the same answer, the same
    /// match and groups, or Unsure.
    #[test]
    fn finds_what_the_regex_finds() {
        let mut unsure = 0;
        for p in PATTERNS {
            let g = Glob::parse(p).unwrap_or_else(|| panic!("{p:?} is a glob"));
            let rx = Regex::new(p).unwrap();
            assert_eq!(g.groups() + 1, rx.captures_len(), "{p:?}");
            for path in paths() {
                let want = rx.captures(&path).map(|c| {
                    c.iter()
                        .map(|m| m.map(|m| (m.start(), m.end())).unwrap())
                        .collect::<Vec<_>>()
                });
                match (g.find(&path), want) {
                    (Found::Unsure, _) => unsure += 1,
                    (Found::No, None) => {}
                    (Found::Yes(got), Some(want)) => assert_eq!(got, want, "{p:?} on {path:?}"),
                    (got, want) => panic!("{p:?} on {path:?}: {got:?}, regex {want:?}"),
                }
            }
        }
        assert!(unsure > 0, "the Unicode digits were never seen");
    }

    #[test]
    fn other_shapes_stay_regexes() {
        for p in NOT_GLOBS {
            assert_eq!(Glob::parse(p), None, "{p:?}");
        }
    }
}
