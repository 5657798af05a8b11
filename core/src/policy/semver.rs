//! Versions and ranges with the grammar and semantics of Masterminds/semver v3
//! (v3.4 and later), the library Flux's image policies use.
//!
//! Ranges: comparators `=`, `!=`, `>`, `<`, `>=`, `=>`, `<=`, `=<`, `~`, `~>`,
//! `^`, a bare version; wildcards `x`, `X`, `*` and missing parts; hyphen
//! ranges `1.2 - 1.4.5`; AND by spaces or commas; OR by `||`; an optional `v`
//! before a version. Parsing follows the library's regular expressions, so
//! what it rejects is rejected here too.
//!
//! Two places where v3.4 changed v3.2 (and we follow v3.4): a prerelease in
//! any comparator of an AND group admits prereleases for the whole group, and
//! a hyphen range may be followed (or preceded) by more comparators.

use regex::Regex;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::LazyLock;

/// A semantic version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version<'a> {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Prerelease, without the leading `-`; empty when none.
    pub pre: Cow<'a, str>,
    /// Build metadata, without the leading `+`; empty when none.
    pub metadata: Cow<'a, str>,
}

impl fmt::Display for Version<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.metadata.is_empty() {
            write!(f, "+{}", self.metadata)?;
        }
        Ok(())
    }
}

/// Why a tag is not a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("empty version")]
    Empty,
    #[error("not of the form X.Y.Z[-prerelease][+build]")]
    Shape,
    #[error("a version number has a character other than a digit")]
    Characters,
    #[error("a version number starts with 0")]
    LeadingZero,
    #[error("a version number is too large")]
    Overflow,
    #[error("invalid prerelease")]
    Prerelease,
    #[error("invalid build metadata")]
    Metadata,
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn parse_number(s: &str) -> Result<u64, VersionError> {
    if s.is_empty() {
        return Err(VersionError::Characters);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VersionError::Characters);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(VersionError::LeadingZero);
    }
    s.parse().map_err(|_| VersionError::Overflow)
}

/// Dot-separated, non-empty identifiers of `[0-9A-Za-z-]`.
fn valid_identifiers(s: &str) -> bool {
    s.split('.')
        .all(|id| !id.is_empty() && id.bytes().all(is_ident_char))
}

impl<'a> Version<'a> {
    /// Parses a strict `X.Y.Z[-pre][+build]` (no `v`, no leading zeros, all
    /// three numbers, non-empty identifiers).
    pub fn parse_strict(v: &'a str) -> Result<Version<'a>, VersionError> {
        if v.is_empty() {
            return Err(VersionError::Empty);
        }
        let (rest, metadata) = match v.split_once('+') {
            Some((r, m)) => (r, m),
            None => (v, ""),
        };
        let mut parts = rest.splitn(3, '.');
        let (Some(major), Some(minor), Some(patch_pre)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(VersionError::Shape);
        };
        let (patch, pre) = match patch_pre.split_once('-') {
            Some((p, pre)) => (p, pre),
            None => (patch_pre, ""),
        };
        let major = parse_number(major)?;
        let minor = parse_number(minor)?;
        let patch = parse_number(patch)?;
        if patch_pre.contains('-') {
            if !valid_identifiers(pre) {
                return Err(VersionError::Prerelease);
            }
            for id in pre.split('.') {
                if id.bytes().all(|b| b.is_ascii_digit()) && id.len() > 1 && id.starts_with('0') {
                    return Err(VersionError::LeadingZero);
                }
            }
        }
        if v.contains('+') && !valid_identifiers(metadata) {
            return Err(VersionError::Metadata);
        }
        Ok(Version {
            major,
            minor,
            patch,
            pre: Cow::Borrowed(pre),
            metadata: Cow::Borrowed(metadata),
        })
    }

    /// Parses a tag the way Flux does: one leading `v` is allowed, the rest
    /// must be a strict semantic version.
    pub fn parse_tag(tag: &'a str) -> Result<Version<'a>, VersionError> {
        Self::parse_strict(tag.strip_prefix('v').unwrap_or(tag))
    }

    /// Parses loosely, as the library's `NewVersion`: `v` prefix, missing minor
    /// and patch (read as 0). Used for the versions inside ranges.
    fn parse_loose(v: &str) -> Result<Version<'static>, VersionError> {
        let caps = LOOSE_VERSION.captures(v).ok_or(VersionError::Shape)?;
        let num = |i: usize| -> Result<u64, VersionError> {
            match caps.get(i) {
                Some(m) => m
                    .as_str()
                    .trim_start_matches('.')
                    .parse()
                    .map_err(|_| VersionError::Overflow),
                None => Ok(0),
            }
        };
        let pre = caps.get(5).map_or("", |m| m.as_str());
        if pre
            .split('.')
            .any(|id| id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(VersionError::LeadingZero);
        }
        Ok(Version {
            major: num(1)?,
            minor: num(2)?,
            patch: num(3)?,
            pre: Cow::Owned(pre.to_string()),
            metadata: Cow::Owned(caps.get(8).map_or("", |m| m.as_str()).to_string()),
        })
    }

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// Precedence order: numbers, then a prerelease sorts before its release;
    /// build metadata is ignored.
    pub fn compare(&self, other: &Version<'_>) -> Ordering {
        self.major
            .cmp(&other.major)
            .then(self.minor.cmp(&other.minor))
            .then(self.patch.cmp(&other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_prerelease(&self.pre, &other.pre),
            })
    }
}

/// Compares prereleases identifier by identifier: numbers (that fit in 64 bits)
/// numerically and below words; words byte-wise; a missing identifier first.
pub fn compare_prerelease(a: &str, b: &str) -> Ordering {
    let mut ai = a.split('.');
    let mut bi = b.split('.');
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (x, y) => {
                let d = compare_pre_part(x.unwrap_or(""), y.unwrap_or(""));
                if d != Ordering::Equal {
                    return d;
                }
            }
        }
    }
}

fn compare_pre_part(s: &str, o: &str) -> Ordering {
    if s == o {
        return Ordering::Equal;
    }
    if s.is_empty() {
        return Ordering::Less;
    }
    if o.is_empty() {
        return Ordering::Greater;
    }
    let sn = parse_u64(s);
    let on = parse_u64(o);
    match (sn, on) {
        (None, None) => s.as_bytes().cmp(o.as_bytes()),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => {
            if x > y {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
    }
}

/// Go's strconv.ParseUint(s, 10, 64): digits only (a leading `+` is not taken).
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// The library's regular expressions. Go's `\s` is ASCII `[\t\n\f\r ]`.
const WS: &str = r"[\t\n\f\r ]";
const CV: &str = r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";

fn compile(pattern: String) -> Regex {
    match Regex::new(&pattern) {
        Ok(r) => r,
        // The patterns are constants of this module; a test compiles each.
        Err(e) => panic!("built-in pattern does not compile: {e}"),
    }
}

static LOOSE_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"^v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?$"
            .to_string(),
    )
});
static CONSTRAINT: LazyLock<Regex> =
    LazyLock::new(|| compile(format!(r"^{WS}*({OPS}){WS}*({CV}){WS}*$")));
static RANGE: LazyLock<Regex> =
    LazyLock::new(|| compile(format!(r"{WS}*({CV}){WS}+-{WS}+({CV}){WS}*")));
static FIND: LazyLock<Regex> = LazyLock::new(|| compile(format!(r"({OPS}){WS}*({CV})")));
static VALID: LazyLock<Regex> = LazyLock::new(|| {
    compile(format!(
        r"^({WS}*({OPS}){WS}*({CV}){WS}*)((?:{WS}+|,{WS}*)({OPS}){WS}*({CV}){WS}*)*$"
    ))
});

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    TildeOrEqual,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
    Tilde,
    Caret,
}

impl Op {
    fn from_str(s: &str) -> Option<Op> {
        Some(match s {
            "" | "=" => Op::TildeOrEqual,
            "!=" => Op::NotEqual,
            ">" => Op::Greater,
            "<" => Op::Less,
            ">=" | "=>" => Op::GreaterEqual,
            "<=" | "=<" => Op::LessEqual,
            "~" | "~>" => Op::Tilde,
            "^" => Op::Caret,
            _ => return None,
        })
    }
}

/// One comparator of a range.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Comparator {
    op: Op,
    /// The operator and version as written (for messages).
    text: String,
    con: Version<'static>,
    dirty: bool,
    minor_dirty: bool,
    patch_dirty: bool,
}

/// Why a range does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("improper constraint: {0}")]
pub struct RangeError(pub String);

/// A parsed range: OR of AND groups of comparators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    source: String,
    groups: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    comparators: Vec<Comparator>,
    /// Some comparator carries a prerelease: prereleases may match.
    admits_prereleases: bool,
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

/// Rewrites `A - B` as `>= A, <= B ` (v3.4 appends the space, so that a
/// comparator after the range stays separate).
fn rewrite_hyphen_ranges(input: &str) -> String {
    let mut out = input.to_string();
    for c in RANGE.captures_iter(input) {
        let from = c.get(1).map_or("", |m| m.as_str());
        let to = c.get(11).map_or("", |m| m.as_str());
        out = out.replacen(&c[0], &format!(">= {from}, <= {to} "), 1);
    }
    out
}

impl Range {
    /// Parses a range in the library's grammar.
    pub fn parse(input: &str) -> Result<Range, RangeError> {
        let rewritten = rewrite_hyphen_ranges(input);
        let mut groups = Vec::new();
        for segment in rewritten.split("||") {
            if !VALID.is_match(segment) {
                return Err(RangeError(segment.to_string()));
            }
            let mut comparators = Vec::new();
            for m in FIND.find_iter(segment) {
                comparators.push(parse_comparator(m.as_str())?);
            }
            if comparators.is_empty() {
                return Err(RangeError(segment.to_string()));
            }
            let admits_prereleases = comparators.iter().any(|c| c.con.is_prerelease());
            groups.push(Group {
                comparators,
                admits_prereleases,
            });
        }
        Ok(Range {
            source: input.to_string(),
            groups,
        })
    }

    /// The range as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `v` satisfies the range.
    pub fn matches(&self, v: &Version<'_>) -> bool {
        self.groups.iter().any(|g| g.check(v).is_ok())
    }

    /// Like [`Range::matches`], but says why not: the first failure of each
    /// AND group, joined.
    pub fn explain(&self, v: &Version<'_>) -> Result<(), String> {
        let mut reasons = Vec::new();
        for g in &self.groups {
            match g.check(v) {
                Ok(()) => return Ok(()),
                Err(r) => reasons.push(r),
            }
        }
        reasons.dedup();
        Err(reasons.join("; "))
    }
}

fn parse_comparator(s: &str) -> Result<Comparator, RangeError> {
    let caps = CONSTRAINT
        .captures(s)
        .ok_or_else(|| RangeError(s.to_string()))?;
    let get = |i: usize| caps.get(i).map_or("", |m| m.as_str());
    let op = Op::from_str(get(1)).ok_or_else(|| RangeError(s.to_string()))?;
    let (major, minor, patch, pre) = (get(3), get(4), get(5), get(6));
    let mut dirty = false;
    let mut minor_dirty = false;
    let mut patch_dirty = false;
    let ver = if is_x(major) || major.is_empty() {
        dirty = true;
        format!("0.0.0{pre}")
    } else if is_x(minor.trim_start_matches('.')) || minor.is_empty() {
        dirty = true;
        minor_dirty = true;
        format!("{major}.0.0{pre}")
    } else if is_x(patch.trim_start_matches('.')) || patch.is_empty() {
        dirty = true;
        patch_dirty = true;
        format!("{major}{minor}.0{pre}")
    } else {
        get(2).to_string()
    };
    let con = Version::parse_loose(&ver).map_err(|_| RangeError(s.to_string()))?;
    Ok(Comparator {
        op,
        text: format!("{}{}", get(1), get(2)),
        con,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

impl Group {
    fn check(&self, v: &Version<'_>) -> Result<(), String> {
        if v.is_prerelease() && !self.admits_prereleases {
            return Err(format!(
                "{v} is a prerelease and the range admits none (no comparator of its group has a prerelease)"
            ));
        }
        for c in &self.comparators {
            c.check(v)?;
        }
        Ok(())
    }
}

impl Comparator {
    fn check(&self, v: &Version<'_>) -> Result<(), String> {
        let c = &self.con;
        let fail = |what: &str| Err(format!("{v} {what} {}", self.text_version()));
        match self.op {
            Op::NotEqual => {
                if self.dirty {
                    if c.major != v.major {
                        return Ok(());
                    }
                    if c.minor != v.minor && !self.minor_dirty {
                        return Ok(());
                    } else if self.minor_dirty {
                        return fail("is equal to");
                    } else if c.patch != v.patch && !self.patch_dirty {
                        return Ok(());
                    } else if self.patch_dirty {
                        if (v.is_prerelease() || c.is_prerelease())
                            && compare_prerelease(&v.pre, &c.pre) != Ordering::Equal
                        {
                            return Ok(());
                        }
                        return fail("is equal to");
                    }
                }
                if v.compare(c) == Ordering::Equal {
                    fail("is equal to")
                } else {
                    Ok(())
                }
            }
            Op::Greater => {
                let ok = if !self.dirty {
                    v.compare(c) == Ordering::Greater
                } else if v.major > c.major {
                    true
                } else if v.major < c.major || self.minor_dirty {
                    false
                } else if self.patch_dirty {
                    v.minor > c.minor
                } else {
                    v.compare(c) == Ordering::Greater
                };
                if ok {
                    Ok(())
                } else {
                    fail("is less than or equal to")
                }
            }
            Op::Less => {
                if v.compare(c) == Ordering::Less {
                    Ok(())
                } else {
                    fail("is greater than or equal to")
                }
            }
            Op::GreaterEqual => {
                if v.compare(c) != Ordering::Less {
                    Ok(())
                } else {
                    fail("is less than")
                }
            }
            Op::LessEqual => {
                if !self.dirty {
                    return if v.compare(c) != Ordering::Greater {
                        Ok(())
                    } else {
                        fail("is greater than")
                    };
                }
                if v.major > c.major
                    || (v.major == c.major && v.minor > c.minor && !self.minor_dirty)
                {
                    fail("is greater than")
                } else {
                    Ok(())
                }
            }
            Op::Tilde => self.tilde(v),
            Op::TildeOrEqual => {
                if self.dirty {
                    self.tilde(v)
                } else if v.compare(c) == Ordering::Equal {
                    Ok(())
                } else {
                    fail("is not equal to")
                }
            }
            Op::Caret => {
                if v.compare(c) == Ordering::Less {
                    return fail("is less than");
                }
                if c.major > 0 || self.minor_dirty {
                    return if v.major == c.major {
                        Ok(())
                    } else {
                        fail("does not have the same major version as")
                    };
                }
                if v.major > 0 {
                    return fail("does not have the same major version as");
                }
                if c.minor > 0 || self.patch_dirty {
                    return if v.minor == c.minor {
                        Ok(())
                    } else {
                        fail("does not have the same minor version as")
                    };
                }
                if v.minor > 0 {
                    return fail("does not have the same minor version as");
                }
                if v.patch == c.patch {
                    Ok(())
                } else {
                    fail("is not equal to")
                }
            }
        }
    }

    fn tilde(&self, v: &Version<'_>) -> Result<(), String> {
        let c = &self.con;
        if v.compare(c) == Ordering::Less {
            return Err(format!("{v} is less than {}", self.text_version()));
        }
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return Ok(());
        }
        if v.major != c.major {
            return Err(format!(
                "{v} does not have the same major version as {}",
                self.text_version()
            ));
        }
        if v.minor != c.minor && !self.minor_dirty {
            return Err(format!(
                "{v} does not have the same major and minor version as {}",
                self.text_version()
            ));
        }
        Ok(())
    }

    fn text_version(&self) -> &str {
        self.text.trim_start_matches(['=', '!', '>', '<', '~', '^'])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(range: &str, version: &str) -> bool {
        let r = Range::parse(range).unwrap_or_else(|e| panic!("{range}: {e}"));
        let v = Version::parse_tag(version).unwrap_or_else(|e| panic!("{version}: {e}"));
        r.matches(&v)
    }

    #[test]
    fn patterns_compile() {
        LazyLock::force(&LOOSE_VERSION);
        LazyLock::force(&CONSTRAINT);
        LazyLock::force(&RANGE);
        LazyLock::force(&FIND);
        LazyLock::force(&VALID);
    }

    #[test]
    fn strict_tags() {
        for ok in [
            "1.2.3",
            "v1.2.3",
            "0.0.0",
            "1.2.3-rc.1",
            "1.2.3+build.01",
            "1.2.3-a-b+c",
        ] {
            assert!(Version::parse_tag(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "vv1.2.3",
            "1.2.3-",
            "1.2.3-01",
            "1.2.3-a..b",
            "1.2.3+",
            "1.2.3+a..b",
            "latest",
            "",
            "v",
            "1.2.x",
            " 1.2.3",
            "1.2.3-ä",
            "99999999999999999999.0.0",
        ] {
            assert!(Version::parse_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ordering() {
        let v = |s| Version::parse_strict(s).unwrap();
        assert_eq!(v("1.0.0-alpha").compare(&v("1.0.0")), Ordering::Less);
        assert_eq!(
            v("1.0.0-alpha.1").compare(&v("1.0.0-alpha")),
            Ordering::Greater
        );
        assert_eq!(v("1.0.0-2").compare(&v("1.0.0-10")), Ordering::Less);
        assert_eq!(v("1.0.0-a").compare(&v("1.0.0-1")), Ordering::Greater);
        assert_eq!(v("1.0.0+a").compare(&v("1.0.0+b")), Ordering::Equal);
    }

    #[test]
    fn ranges_from_the_library_docs() {
        let cases: &[(&str, &str, bool)] = &[
            (">=1.0.0 <2.0.0", "1.5.0", true),
            (">=1.0.0 <2.0.0", "2.0.0", false),
            (">=1.0.0, <2.0.0", "1.0.0", true),
            ("1.2.x", "1.2.9", true),
            ("1.2.x", "1.3.0", false),
            ("*", "3.4.5", true),
            ("~1.2.3", "1.2.9", true),
            ("~1.2.3", "1.3.0", false),
            ("~1", "1.9.0", true),
            ("~>1.2", "1.2.5", true),
            ("^1.2.3", "1.9.9", true),
            ("^1.2.3", "2.0.0", false),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.0.3", "0.0.4", false),
            ("^0", "0.9.0", true),
            ("1.2 - 1.4.5", "1.4.5", true),
            ("1.2 - 1.4.5", "1.4.6", false),
            ("!=1.5.0", "1.5.0", false),
            (">1.0 <=2.x", "2.9.0", true),
            ("1.0.0 || >=3.0.0", "3.1.0", true),
            ("v1.2.3", "1.2.3", true),
            ("=1.2.3", "v1.2.3", true),
            (">2", "2.5.0", false),
            (">2.1", "2.1.9", false),
            (">2.1", "2.2.0", true),
        ];
        for (r, v, want) in cases {
            assert_eq!(check(r, v), *want, "{r} vs {v}");
        }
    }

    #[test]
    fn prereleases_follow_v3_4() {
        // Only a group with a prerelease comparator admits prereleases...
        assert!(!check(">=1.0.0 <2.0.0", "1.5.0-rc.1"));
        assert!(check(">=1.0.0-0 <2.0.0", "1.5.0-rc.1"));
        // ...and then for the whole AND group (v3.4).
        assert!(check(">= 1.0.0 <= 2.0.0-beta", "1.0.1-beta"));
        assert!(check(">1.0.0-beta.1 < 2", "1.5.0-alpha"));
        // Not across OR groups.
        assert!(!check(">1.0.0-beta.1 <2 || >3", "3.1.0-alpha"));
    }

    #[test]
    fn hyphen_range_with_more_comparators() {
        // v3.4 parses these; v3.2 rejected them.
        assert!(check("1.0.0 - 2.0.0 !=1.5.0", "1.4.0"));
        assert!(!check("1.0.0 - 2.0.0 !=1.5.0", "1.5.0"));
        assert!(!check("1.0.0 - 2.0.0 !=1.5.0", "2.0.1"));
    }

    #[test]
    fn bad_ranges() {
        for bad in [
            "",
            " ",
            "foo",
            ">=1.0.0 <",
            "1.0.0 ||",
            ">=a",
            "1.2.3.4",
            ">==1.0",
            ">=1x.2.3",
            ">=0.5 1.0.0 - 2.0.0",
            "1.0.0 - 2.0.0||3.0.0 - 4.0.0",
        ] {
            assert!(Range::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
