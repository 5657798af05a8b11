//! Git URLs: their host, and whether one is a local path.

/// Host and port of a Git URL (`ssh://git@host:2222/x`, `git@host:x`,
/// `https://host/x`).
pub fn url_host(url: &str) -> (String, Option<u16>) {
    let rest = match url.split_once("://") {
        Some((_, r)) => r,
        None => url,
    };
    let authority = rest.split(['/']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    // scp-like `host:path` has no port.
    if !url.contains("://") {
        return (authority.split(':').next().unwrap_or("").to_string(), None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h.trim_matches(['[', ']']).to_string(), p.parse().ok())
        }
        _ => (authority.trim_matches(['[', ']']).to_string(), None),
    }
}

/// Whether `url` names a repository on this machine (a path or `file://`),
/// which libgit2 reaches without a server, and so without running the
/// remote's hooks.
pub fn is_local(url: &str) -> bool {
    if url.starts_with("file://") {
        return true;
    }
    if url.contains("://") {
        return false;
    }
    // scp-like `host:path` has a colon before any slash.
    let before_slash = url.split('/').next().unwrap_or(url);
    !before_slash.contains(':') || url.starts_with('/') || url.starts_with('.')
}
