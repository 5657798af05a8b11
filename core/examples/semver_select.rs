//! The semver selection as a whole process, for comparing with the
//! Masterminds oracle (tests/oracles/semver) in `make bench`:
//!
//!   semver_select gen N > input      writes `S<TAB>range<TAB>tags` (tags
//!                                    separated by 0x1f), N mixed tags
//!   semver_select < input            prints the selected tag
//!
//! The input format is the oracle's, so both read the same bytes.

use imageauto_core::policy::testdata::mixed_tags;
use imageauto_core::policy::{Ordering, Policy, Range};
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("gen") {
        let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        let tags = mixed_tags(n, 42);
        println!("S\t>=1.0.0 <2.0.0\t{}", tags.join("\x1f"));
        return;
    }
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read standard input: {e}");
        std::process::exit(1);
    }
    let mut out = std::io::stdout().lock();
    for line in input.lines() {
        let mut f = line.splitn(3, '\t');
        let (Some("S"), Some(range), Some(tags)) = (f.next(), f.next(), f.next()) else {
            let _ = writeln!(out, "?");
            continue;
        };
        let answer = match Range::parse(range) {
            Err(_) => "E".to_string(),
            Ok(r) => {
                let tags: Vec<&str> = tags.split('\x1f').collect();
                Policy::new(Ordering::SemVer(r), None)
                    .select(&tags)
                    .map_or_else(|_| "-".to_string(), str::to_string)
            }
        };
        let _ = writeln!(out, "{answer}");
    }
}
