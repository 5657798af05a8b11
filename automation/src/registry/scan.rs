//! The outcome of a scan as an ImageRepository's status records it.

use crate::policy::Exclusions;

/// Adler-32 of `bytes` (RFC 1950), as Go's `hash/adler32` computes it.
pub fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 bytes is the most that can be summed before `b` may overflow.
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Flux's `lastScanResult.revision`: the Adler-32, in decimal, of the JSON
/// array of the tags in the order stored (image-reflector-controller
/// `internal/database/badger.go`, `SetTags`).
pub fn revision(tags: &[String]) -> String {
    let json = serde_json::to_vec(tags).unwrap_or_default();
    adler32(&json).to_string()
}

/// How many tags `status.lastScanResult.latestTags` holds.
pub const LATEST_TAGS: usize = 10;

/// Tags after the exclusion list, sorted as Flux stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagScan {
    /// Descending by bytes, without duplicates.
    pub tags: Vec<String>,
    /// The first [`LATEST_TAGS`] of `tags`.
    pub latest_tags: Vec<String>,
    /// A checksum of the set of tags, as Flux computes it: it changes only
    /// when the set changes.
    pub revision: String,
    /// Tags the registry sent that the distribution spec's grammar refuses
    /// (control characters, `: `, `@`, over 128 characters...): dropped
    /// here, so that they never reach a policy, a file or a terminal.
    pub invalid: usize,
}

impl TagScan {
    pub fn new(mut tags: Vec<String>, exclusions: &Exclusions) -> Self {
        let before = tags.len();
        tags.retain(|t| super::reference::valid_tag(t));
        let invalid = before - tags.len();
        tags.retain(|t| exclusions.excluding(t).is_none());
        tags.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        tags.dedup();
        let revision = revision(&tags);
        let latest_tags = tags.iter().take(LATEST_TAGS).cloned().collect();
        Self {
            tags,
            latest_tags,
            revision,
            invalid,
        }
    }

    pub fn count(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_is_fluxs() {
        // Values from Go's encoding/json and hash/adler32.
        assert_eq!(adler32(b"Wikipedia"), 300_286_872);
        let tags: Vec<String> = ["b", "a", "10.0.0", "1.0.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(revision(&tags), "1194198298");
        assert_eq!(revision(&[]), "18153657");
        let big = vec![0xffu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for x in &big {
            a = (a + u64::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(u64::from(adler32(&big)), (b << 16) | a);
    }

    #[test]
    fn sorted_filtered_and_stable() {
        let ex = Exclusions::new(&["^.*\\.sig$"]).unwrap();
        let tags: Vec<String> = ["1.0.0", "b", "sha256-x.sig", "a", "1.0.0", "10.0.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = TagScan::new(tags.clone(), &ex);
        assert_eq!(r.tags, ["b", "a", "10.0.0", "1.0.0"]);
        assert_eq!(r.count(), 4);
        let mut shuffled = tags;
        shuffled.reverse();
        assert_eq!(TagScan::new(shuffled, &ex).revision, r.revision);
        let more = TagScan::new(vec!["b".into(), "a".into(), "c".into()], &ex);
        assert_ne!(more.revision, r.revision);
        let many: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
        assert_eq!(TagScan::new(many, &ex).latest_tags.len(), LATEST_TAGS);
    }

    #[test]
    fn tags_outside_the_grammar_are_dropped_and_counted() {
        let ex = Exclusions::new(&["^.*\\.sig$"]).unwrap();
        let tags: Vec<String> = [
            "1.0.0",
            "1.0.1\nimage: evil",
            "2.0.0\r",
            "\u{1b}[2J",
            "3.0.0: x",
            "4.0.0\u{2028}",
            "5.0.0@sha256:aaaa",
            "",
            ".hidden",
            "x.sig",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = TagScan::new(tags, &ex);
        assert_eq!(r.tags, ["1.0.0"]);
        assert_eq!(r.invalid, 8);
        assert_eq!(r.revision, TagScan::new(vec!["1.0.0".into()], &ex).revision);
    }
}
