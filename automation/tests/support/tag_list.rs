//! Tag-list decoding from a registry's answer, for the `tag_list` fuzz target
//! and its property test: any bytes decode to an error or to tags, and after
//! the scan only tags of the distribution grammar remain.

use automation::policy::Exclusions;
use automation::registry::TagScan;
use automation::registry::client::decode_tags_page;
use automation::registry::reference::valid_tag;

pub fn check(body: &[u8]) {
    let Ok(tags) = decode_tags_page(body) else {
        return;
    };
    let n = tags.len();
    let Ok(ex) = Exclusions::new(&["^.*\\.sig$"]) else {
        return;
    };
    let scan = TagScan::new(tags, &ex);
    assert!(scan.tags.len() + scan.invalid <= n);
    for t in &scan.tags {
        assert!(valid_tag(t), "{t:?} passed the scan");
        assert!(!t.chars().any(char::is_control), "{t:?}");
    }
    assert!(scan.latest_tags.len() <= 10);
}
