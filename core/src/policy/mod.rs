//! Tag selection, as Flux's ImagePolicy does it: exclusion list, then
//! `filterTags` (with `extract`), then one of semver, alphabetical or
//! numerical ordering. Pure functions over a tag list.

pub mod number;
pub mod semver;
#[doc(hidden)]
pub mod testdata;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;

pub use semver::{Range, RangeError, Version, VersionError};

/// Direction of the alphabetical and numerical orderings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Take the greatest.
    #[default]
    Asc,
    /// Take the least.
    Desc,
}

/// How the candidates are ordered.
#[derive(Clone, Debug)]
pub enum Ordering {
    SemVer(Range),
    Alphabetical(Order),
    Numerical(Order),
}

/// `filterTags`: keep the tags the pattern matches (anywhere in the tag); with
/// an `extract` template, order by its expansion against the first match.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    regex: Regex,
    extract: Option<String>,
}

/// The exclusion list of an ImageRepository, compiled.
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    patterns: Vec<Regex>,
}

/// A problem with a policy's definition or with applying it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("semver range {range:?} does not parse: {reason}")]
    Range { range: String, reason: String },
    #[error("semver range is empty: give a range such as \">=1.0.0 <2.0.0\"")]
    EmptyRange,
    #[error("regular expression {pattern:?} does not compile: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error(
        "extract {extract:?} refers to {group}, which pattern {pattern:?} does not define{hint}"
    )]
    ExtractGroup {
        extract: String,
        pattern: String,
        group: String,
        hint: String,
    },
    #[error("exclusionList[{index}] {pattern:?} does not compile: {reason}")]
    Exclusion {
        index: usize,
        pattern: String,
        reason: String,
    },
    #[error("no tags to choose from")]
    NoTags,
    #[error("no tag is left after filterTags {pattern:?}")]
    NothingMatched { pattern: String },
    #[error("no tag is a semantic version within range {range:?}")]
    NoVersionInRange { range: String },
    #[error("tag {tag:?} is not a number{}: the numerical policy needs every tag to be one; narrow the tags with filterTags", extracted_note(.tag, .value))]
    NotANumber { tag: String, value: String },
}

fn extracted_note(tag: &str, value: &str) -> String {
    if tag == value {
        String::new()
    } else {
        format!(" (extracted {value:?})")
    }
}

impl PolicyError {
    /// The field of the ImagePolicy (or ImageRepository) the error is about.
    pub fn field(&self) -> Option<String> {
        match self {
            PolicyError::Range { .. } | PolicyError::EmptyRange => {
                Some("spec.policy.semver.range".into())
            }
            PolicyError::Pattern { .. } => Some("spec.filterTags.pattern".into()),
            PolicyError::ExtractGroup { .. } => Some("spec.filterTags.extract".into()),
            PolicyError::Exclusion { index, .. } => Some(format!("spec.exclusionList.{index}")),
            _ => None,
        }
    }
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| match e {
        regex::Error::Syntax(s) => s.lines().last().unwrap_or(&s).trim().to_string(),
        other => other.to_string(),
    })
}

impl Exclusions {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PolicyError> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(index, p)| {
                compile_regex(p.as_ref()).map_err(|reason| PolicyError::Exclusion {
                    index,
                    pattern: p.as_ref().to_string(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// The index of the first pattern that matches `tag`.
    pub fn excluding(&self, tag: &str) -> Option<usize> {
        self.patterns.iter().position(|p| p.is_match(tag))
    }

    pub fn pattern(&self, index: usize) -> &str {
        self.patterns.get(index).map_or("", Regex::as_str)
    }

    /// The tags no pattern matches, in their order.
    pub fn apply<'t, S: AsRef<str>>(&self, tags: &'t [S]) -> Vec<&'t str> {
        tags.iter()
            .map(AsRef::as_ref)
            .filter(|t| self.excluding(t).is_none())
            .collect()
    }
}

/// The group references of an extract template (`$1`, `${1}`, `$name`,
/// `${name}`; `$$` is a literal dollar), following Go's `Regexp.Expand`.
fn template_references(template: &str) -> Vec<&str> {
    let mut refs = Vec::new();
    let b = template.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        i += 1;
        if i >= b.len() {
            break;
        }
        if b[i] == b'$' {
            i += 1;
            continue;
        }
        let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        if b[i] == b'{' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && is_name(b[j]) {
                j += 1;
            }
            if j < b.len() && b[j] == b'}' && j > start {
                refs.push(&template[start..j]);
                i = j + 1;
            }
            continue;
        }
        let start = i;
        while i < b.len() && is_name(b[i]) {
            i += 1;
        }
        if i > start {
            refs.push(&template[start..i]);
        }
    }
    refs
}

impl CompiledFilter {
    pub fn new(pattern: &str, extract: &str) -> Result<Self, PolicyError> {
        let regex = compile_regex(pattern).map_err(|reason| PolicyError::Pattern {
            pattern: pattern.to_string(),
            reason,
        })?;
        for group in template_references(extract) {
            let exists = match group.parse::<usize>() {
                Ok(n) => n < regex.captures_len(),
                Err(_) => regex.capture_names().flatten().any(|n| n == group),
            };
            if !exists {
                let digits = group.bytes().take_while(u8::is_ascii_digit).count();
                let hint = if digits > 0 && digits < group.len() {
                    format!(
                        "; ${group} is read as one name, write ${{{}}}{} for group {} followed by text",
                        &group[..digits],
                        &group[digits..],
                        &group[..digits]
                    )
                } else {
                    String::new()
                };
                return Err(PolicyError::ExtractGroup {
                    extract: extract.to_string(),
                    pattern: pattern.to_string(),
                    group: format!("${{{group}}}"),
                    hint,
                });
            }
        }
        Ok(Self {
            regex,
            extract: (!extract.is_empty()).then(|| extract.to_string()),
        })
    }

    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// The value the policy orders `tag` by, or `None` when the pattern does
    /// not match.
    pub fn apply<'t>(&self, tag: &'t str) -> Option<Cow<'t, str>> {
        match &self.extract {
            None => self.regex.is_match(tag).then_some(Cow::Borrowed(tag)),
            Some(template) => {
                let caps = self.regex.captures(tag)?;
                let mut out = String::new();
                caps.expand(template, &mut out);
                Some(Cow::Owned(out))
            }
        }
    }
}

/// A compiled ImagePolicy: optional filter, then an ordering.
#[derive(Clone, Debug)]
pub struct Policy {
    pub filter: Option<CompiledFilter>,
    pub ordering: Ordering,
}

/// The candidates the ordering sees: (value to order by, index of the tag).
/// When two tags give the same value, the later tag takes the value's place.
fn candidates<'t>(filter: Option<&CompiledFilter>, tags: &[&'t str]) -> Vec<(Cow<'t, str>, usize)> {
    let Some(filter) = filter else {
        return tags
            .iter()
            .enumerate()
            .map(|(i, t)| (Cow::Borrowed(*t), i))
            .collect();
    };
    let mut out: Vec<(Cow<'t, str>, usize)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, tag) in tags.iter().enumerate() {
        if let Some(value) = filter.apply(tag) {
            match seen.get(value.as_ref()) {
                Some(&slot) => out[slot].1 = i,
                None => {
                    seen.insert(value.to_string(), out.len());
                    out.push((value, i));
                }
            }
        }
    }
    out
}

impl Ordering {
    /// Index into `candidates` of the winner.
    fn latest(
        &self,
        candidates: &[(Cow<'_, str>, usize)],
        tags: &[&str],
    ) -> Result<usize, PolicyError> {
        if candidates.is_empty() {
            return Err(PolicyError::NoTags);
        }
        match self {
            Ordering::SemVer(range) => {
                let mut best: Option<(usize, Version<'_>)> = None;
                for (i, (value, _)) in candidates.iter().enumerate() {
                    let Ok(v) = Version::parse_tag(value) else {
                        continue;
                    };
                    if !range.matches(&v) {
                        continue;
                    }
                    if best
                        .as_ref()
                        .is_none_or(|(_, b)| v.compare(b) == std::cmp::Ordering::Greater)
                    {
                        best = Some((i, v));
                    }
                }
                best.map(|(i, _)| i)
                    .ok_or_else(|| PolicyError::NoVersionInRange {
                        range: range_text(range),
                    })
            }
            Ordering::Alphabetical(order) => {
                let mut latest: Option<usize> = None;
                for (i, (value, _)) in candidates.iter().enumerate() {
                    let replace = match latest {
                        None => true,
                        Some(l) if candidates[l].0.is_empty() => true,
                        Some(l) => match order {
                            Order::Asc => value.as_bytes() >= candidates[l].0.as_bytes(),
                            Order::Desc => value.as_bytes() <= candidates[l].0.as_bytes(),
                        },
                    };
                    if replace {
                        latest = Some(i);
                    }
                }
                latest.ok_or(PolicyError::NoTags)
            }
            Ordering::Numerical(order) => {
                let mut latest = 0;
                let mut prev = 0.0;
                for (i, (value, tag)) in candidates.iter().enumerate() {
                    let Some(cv) = number::parse_float(value) else {
                        return Err(PolicyError::NotANumber {
                            tag: tags[*tag].to_string(),
                            value: value.to_string(),
                        });
                    };
                    let skip = i > 0
                        && match order {
                            Order::Asc => cv < prev,
                            Order::Desc => cv > prev,
                        };
                    if !skip {
                        latest = i;
                        prev = cv;
                    }
                }
                Ok(latest)
            }
        }
    }
}

/// The range text, for messages (ranges keep what they were parsed from).
fn range_text(range: &Range) -> String {
    range.source().to_string()
}

impl Policy {
    /// Compiles the ordering and filter. `range`, `alphabetical` and
    /// `numerical` are the three choices; exactly one must be set.
    pub fn new(ordering: Ordering, filter: Option<CompiledFilter>) -> Self {
        Self { filter, ordering }
    }

    /// Parses a semver range for a policy, with the error Flux users see.
    pub fn semver(range: &str) -> Result<Ordering, PolicyError> {
        if range.trim().is_empty() {
            return Err(PolicyError::EmptyRange);
        }
        Range::parse(range)
            .map(Ordering::SemVer)
            .map_err(|e| PolicyError::Range {
                range: range.to_string(),
                reason: e.to_string(),
            })
    }

    /// Selects the latest tag. `tags` are in the order the scan stores them
    /// (descending by bytes): ties in semver go to the first, in numerical to
    /// the last.
    pub fn select<'t, S: AsRef<str>>(&self, tags: &'t [S]) -> Result<&'t str, PolicyError> {
        let tags: Vec<&'t str> = tags.iter().map(AsRef::as_ref).collect();
        self.select_refs(&tags)
    }

    fn select_refs<'t>(&self, tags: &[&'t str]) -> Result<&'t str, PolicyError> {
        if tags.is_empty() {
            return Err(PolicyError::NoTags);
        }
        let cands = candidates(self.filter.as_ref(), tags);
        if cands.is_empty()
            && let Some(f) = &self.filter
        {
            return Err(PolicyError::NothingMatched {
                pattern: f.pattern().to_string(),
            });
        }
        let winner = self.ordering.latest(&cands, tags)?;
        Ok(tags[cands[winner].1])
    }

    /// Explains, tag by tag, what the exclusion list, the filter and the
    /// ordering made of each tag, and which one wins. Tags are first sorted as
    /// a scan stores them (descending by bytes, duplicates removed).
    pub fn explain<S: AsRef<str>>(&self, exclusions: &Exclusions, tags: &[S]) -> Explanation {
        let mut sorted: Vec<&str> = tags.iter().map(AsRef::as_ref).collect();
        sorted.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        sorted.dedup();
        let mut verdicts: Vec<TagVerdict> = sorted
            .iter()
            .map(|t| TagVerdict {
                tag: t.to_string(),
                excluded: false,
                filtered: false,
                extracted: None,
                accepted: false,
                reason: String::new(),
            })
            .collect();
        let mut kept: Vec<&str> = Vec::new();
        let mut kept_index: Vec<usize> = Vec::new();
        for (i, tag) in sorted.iter().enumerate() {
            if let Some(x) = exclusions.excluding(tag) {
                verdicts[i].excluded = true;
                verdicts[i].reason =
                    format!("excluded by exclusionList[{x}] {}", exclusions.pattern(x));
            } else {
                kept.push(tag);
                kept_index.push(i);
            }
        }
        let cands = candidates(self.filter.as_ref(), &kept);
        // Which candidate each kept tag ended up as.
        let mut by_tag: HashMap<usize, usize> = HashMap::new();
        for (ci, (_, ti)) in cands.iter().enumerate() {
            by_tag.insert(*ti, ci);
        }
        for (ki, tag) in kept.iter().enumerate() {
            let v = &mut verdicts[kept_index[ki]];
            match &self.filter {
                None => v.filtered = true,
                Some(f) => match f.apply(tag) {
                    None => {
                        v.reason = format!("does not match filterTags.pattern {}", f.pattern());
                    }
                    Some(value) => {
                        v.filtered = true;
                        if f.extract.is_some() {
                            v.extracted = Some(value.to_string());
                        }
                        if !by_tag.contains_key(&ki) {
                            let later = cands
                                .iter()
                                .find(|(cv, _)| cv.as_ref() == value.as_ref())
                                .map(|(_, t)| kept[*t])
                                .unwrap_or_default();
                            v.reason = format!(
                                "extracts {value:?}, as does {later:?}, which comes later and takes its place"
                            );
                        }
                    }
                },
            }
        }
        // What the ordering thinks of each candidate.
        for (value, ti) in &cands {
            let v = &mut verdicts[kept_index[*ti]];
            match &self.ordering {
                Ordering::SemVer(range) => match Version::parse_tag(value) {
                    Err(e) => v.reason = format!("not a semantic version: {e}"),
                    Ok(ver) => match range.explain(&ver) {
                        Ok(()) => {
                            v.accepted = true;
                            v.reason = format!("version {ver} is within {:?}", range.source());
                        }
                        Err(why) => v.reason = why,
                    },
                },
                Ordering::Alphabetical(order) => {
                    v.accepted = true;
                    v.reason = format!("ordered alphabetically ({})", order_word(*order));
                }
                Ordering::Numerical(order) => match number::parse_float(value) {
                    Some(n) => {
                        v.accepted = true;
                        v.reason = format!("number {n} ({})", order_word(*order));
                    }
                    None => v.reason = "not a number: the numerical policy fails".to_string(),
                },
            }
        }
        let (latest, error) = if kept.is_empty() {
            (None, Some(PolicyError::NoTags.to_string()))
        } else if cands.is_empty() {
            let pattern = self.filter.as_ref().map_or("", CompiledFilter::pattern);
            (
                None,
                Some(
                    PolicyError::NothingMatched {
                        pattern: pattern.to_string(),
                    }
                    .to_string(),
                ),
            )
        } else {
            match self.ordering.latest(&cands, &kept) {
                Ok(w) => {
                    let ti = cands[w].1;
                    let v = &mut verdicts[kept_index[ti]];
                    v.reason = format!("selected: {}", v.reason);
                    (Some(kept[ti].to_string()), None)
                }
                Err(e) => (None, Some(e.to_string())),
            }
        };
        Explanation {
            latest,
            error,
            tags: verdicts,
        }
    }
}

fn order_word(order: Order) -> &'static str {
    match order {
        Order::Asc => "asc: the greatest wins",
        Order::Desc => "desc: the least wins",
    }
}

/// What happened to one tag.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct TagVerdict {
    pub tag: String,
    /// Dropped by the exclusion list.
    pub excluded: bool,
    /// Kept by filterTags (true when there is no filter and it was not excluded).
    pub filtered: bool,
    /// The value `extract` produced, when the filter has one.
    pub extracted: Option<String>,
    /// The ordering accepts it as a candidate.
    pub accepted: bool,
    pub reason: String,
}

/// The whole story of a selection.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub latest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tags: Vec<TagVerdict>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn semver(range: &str) -> Policy {
        Policy::new(Policy::semver(range).unwrap(), None)
    }

    fn sorted(tags: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }

    #[test]
    fn semver_picks_highest_in_range() {
        let tags = sorted(&["1.0.0", "1.2.3", "1.10.0", "2.0.0-rc.1", "v1.3.0", "latest"]);
        assert_eq!(semver(">=1.0.0 <2.0.0").select(&tags).unwrap(), "1.10.0");
        assert_eq!(semver("~1.2").select(&tags).unwrap(), "1.2.3");
        assert_eq!(semver("1.3.x").select(&tags).unwrap(), "v1.3.0");
        assert_eq!(semver(">=2.0.0-0").select(&tags).unwrap(), "2.0.0-rc.1");
        assert!(matches!(
            semver(">=3").select(&tags),
            Err(PolicyError::NoVersionInRange { .. })
        ));
    }

    #[test]
    fn semver_ties_go_to_the_first_in_descending_order() {
        let tags = sorted(&["1.0.0", "v1.0.0", "1.0.0+b", "1.0.0+a"]);
        // descending bytes: v1.0.0, 1.0.0+b, 1.0.0+a, 1.0.0
        assert_eq!(semver("*").select(&tags).unwrap(), "v1.0.0");
    }

    #[test]
    fn alphabetical_orders_bytes() {
        let tags = sorted(&["RELEASE.2024-01-01", "RELEASE.2023-12-31", "a", "Z"]);
        let asc = Policy::new(Ordering::Alphabetical(Order::Asc), None);
        let desc = Policy::new(Ordering::Alphabetical(Order::Desc), None);
        assert_eq!(asc.select(&tags).unwrap(), "a");
        assert_eq!(desc.select(&tags).unwrap(), "RELEASE.2023-12-31");
    }

    #[test]
    fn numerical_with_extract() {
        let tags = sorted(&[
            "main-abc1234-1700000000",
            "main-def5678-1700000500",
            "feature-x-1800000000",
            "main-0000000-99",
        ]);
        let filter = CompiledFilter::new(r"^main-[a-f0-9]+-(?P<ts>[0-9]+)", "$ts").unwrap();
        let p = Policy::new(Ordering::Numerical(Order::Asc), Some(filter.clone()));
        assert_eq!(p.select(&tags).unwrap(), "main-def5678-1700000500");
        let p = Policy::new(Ordering::Numerical(Order::Desc), Some(filter));
        assert_eq!(p.select(&tags).unwrap(), "main-0000000-99");
    }

    #[test]
    fn numerical_fails_on_a_word() {
        let tags = sorted(&["1", "2", "latest"]);
        let p = Policy::new(Ordering::Numerical(Order::Asc), None);
        let err = p.select(&tags).unwrap_err();
        assert!(err.to_string().contains("\"latest\""), "{err}");
    }

    #[test]
    fn numerical_ties_go_to_the_later_tag() {
        let tags = vec!["1.0".to_string(), "1".to_string()];
        let p = Policy::new(Ordering::Numerical(Order::Asc), None);
        assert_eq!(p.select(&tags).unwrap(), "1");
        let p = Policy::new(Ordering::Numerical(Order::Desc), None);
        assert_eq!(p.select(&tags).unwrap(), "1");
    }

    #[test]
    fn extract_duplicates_later_wins() {
        let tags = vec!["b-1".to_string(), "a-1".to_string()];
        let filter = CompiledFilter::new(r"-(\d+)$", "$1").unwrap();
        let p = Policy::new(Ordering::Numerical(Order::Asc), Some(filter));
        assert_eq!(p.select(&tags).unwrap(), "a-1");
    }

    #[test]
    fn filter_is_unanchored() {
        let tags = sorted(&["prod-1.0.0", "1.1.0", "dev-2.0.0"]);
        let filter = CompiledFilter::new("prod", "").unwrap();
        let p = Policy::new(Ordering::Alphabetical(Order::Asc), Some(filter));
        assert_eq!(p.select(&tags).unwrap(), "prod-1.0.0");
    }

    #[test]
    fn extract_templates() {
        let f = CompiledFilter::new(r"^(?P<a>\w+)-(\d+)$", "${a}:$2:$$").unwrap();
        assert_eq!(f.apply("x-12").unwrap(), "x:12:$");
        let err = CompiledFilter::new(r"^(\d+)$", "$2").unwrap_err();
        assert!(matches!(err, PolicyError::ExtractGroup { .. }));
        let err = CompiledFilter::new(r"^(\d+)x$", "$1x").unwrap_err();
        assert!(err.to_string().contains("${1}x"), "{err}");
        assert!(CompiledFilter::new("(", "").is_err());
    }

    #[test]
    fn nothing_after_filter_is_an_error() {
        let tags = sorted(&["a", "b"]);
        let p = Policy::new(
            Ordering::Alphabetical(Order::Asc),
            Some(CompiledFilter::new("^z", "").unwrap()),
        );
        assert!(matches!(
            p.select(&tags),
            Err(PolicyError::NothingMatched { .. })
        ));
    }

    #[test]
    fn explain_marks_every_stage() {
        let ex = Exclusions::new(&["^.*\\.sig$"]).unwrap();
        let p = Policy::new(
            Policy::semver(">=1.0.0").unwrap(),
            Some(CompiledFilter::new(r"^v?(\d+\.\d+\.\d+.*)$", "$1").unwrap()),
        );
        let e = p.explain(
            &ex,
            &["1.0.0", "v1.2.0", "sha256-abc.sig", "latest", "1.2.0"],
        );
        assert_eq!(e.latest.as_deref(), Some("1.2.0"));
        let get = |t: &str| e.tags.iter().find(|v| v.tag == t).unwrap();
        assert!(get("sha256-abc.sig").excluded);
        assert!(!get("latest").filtered);
        assert_eq!(get("1.0.0").extracted.as_deref(), Some("1.0.0"));
        assert!(get("1.0.0").accepted);
        // v1.2.0 and 1.2.0 extract the same value; 1.2.0 comes later in
        // descending byte order and takes its place.
        assert!(get("v1.2.0").reason.contains("takes its place"));
        assert!(get("1.2.0").reason.starts_with("selected"));
    }
}
