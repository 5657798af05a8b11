//! Deterministic tag lists for benchmarks: what a busy repository holds —
//! releases with and without `v`, prereleases, build tags with timestamps and
//! commit hashes, signatures and moving tags.

/// `n` tags, the same for the same `n` and `seed`, sorted as a scan stores them
/// (descending bytes, no duplicates).
pub fn mixed_tags(n: usize, seed: u64) -> Vec<String> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut tags = Vec::with_capacity(n);
    let mut i = 0u64;
    while tags.len() < n {
        let r = next();
        let (a, b, c) = (r % 4, (r >> 8) % 40, (r >> 16) % 200);
        let sha = format!("{:07x}", (r >> 24) & 0xfff_ffff);
        let ts = 1_600_000_000 + (r >> 40) % 200_000_000;
        let tag = match i % 10 {
            0..=2 => format!("{a}.{b}.{c}"),
            3 => format!("v{a}.{b}.{c}"),
            4 => format!("{a}.{b}.{c}-rc.{}", (r >> 32) % 10),
            5 => format!("main-{sha}-{ts}"),
            6 => format!("branch-dev-{ts}-{sha}"),
            7 => format!("sha256-{sha}{sha}.sig"),
            8 => format!("{a}.{b}"),
            _ => format!("pr-{}-{sha}", c),
        };
        tags.push(tag);
        i += 1;
        if tags.len() == n {
            tags.sort_unstable_by(|x, y| y.cmp(x));
            tags.dedup();
        }
    }
    tags
}
