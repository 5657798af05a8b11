//! Pages of tags: the `Link` header, `Retry-After`, and a page's body.

use super::*;

/// The `rel="next"` target of a `Link` header, resolved against `base`.
pub fn link_next(headers: &HeaderMap, base: &Url) -> Option<Url> {
    for value in headers.get_all(LINK) {
        let Ok(v) = value.to_str() else { continue };
        for part in v.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                let url = target.trim_start_matches('<').trim_end_matches('>');
                return base.join(url).ok();
            }
        }
    }
    None
}

/// Seconds (or an HTTP date) in `Retry-After`.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

#[derive(Deserialize)]
pub(super) struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// Decodes one page of a tag list (`{"name": ..., "tags": [...]}`; `tags`
/// may be null). The tags are not checked here: the scan drops those outside
/// the tag grammar ([`super::TagScan`]).
pub fn decode_tags_page(body: &[u8]) -> Result<Vec<String>, String> {
    let page: TagsPage = serde_json::from_slice(body)
        .map_err(|e| format!("the tag list is not JSON of the distribution API ({e})"))?;
    Ok(page.tags.unwrap_or_default())
}
