//! The checks of the `yaml_nesting` and `tag_list` fuzz targets, over
//! generated inputs: deep nesting is refused without exhausting the stack,
//! and no tag outside the grammar survives a scan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/nesting.rs"]
mod nesting;
#[path = "support/tag_list.rs"]
mod tag_list;

#[test]
fn nesting_of_every_shape_and_depth() {
    // Each shape alone, at depths around and far past the limit.
    for shape in 0u8..4 {
        for reps in [0u8, 10, 18, 19, 40, 63] {
            nesting::check(&[(reps << 2) | shape]);
            nesting::check(&[(reps << 2) | shape; 30]);
        }
    }
    // Mixed shapes, from a fixed pseudo-random stream.
    let mut rng = imageauto_tests_rng(7);
    for _ in 0..150 {
        let len = (rng() % 12) as usize;
        let data: Vec<u8> = (0..len).map(|_| (rng() % 256) as u8).collect();
        nesting::check(&data);
    }
}

#[test]
fn the_limit_is_an_error_that_names_the_place() {
    let (text, depth) = nesting::generate(&[(60 << 2), (60 << 2)]);
    assert!(depth > automation::yaml::MAX_DEPTH);
    let e = automation::yaml::parse(&text).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.column > 1);
    assert!(e.message.contains("300 levels"), "{e}");
}

#[test]
fn tag_lists_of_any_shape() {
    for body in [
        &br#"{"name":"a","tags":["1.0","x\ny","\u001b[2J","a: b","\u2028","ok_1"]}"#[..],
        br#"{"tags":null}"#,
        br#"{"tags":[1,2]}"#,
        br#"[]"#,
        b"",
        b"\xff\xfe",
        br#"{"tags":["a","a","b"],"extra":{"deep":[[[[]]]]}}"#,
    ] {
        tag_list::check(body);
    }
    let mut rng = imageauto_tests_rng(11);
    let alphabet: Vec<char> = "aZ09_.-:@/\n\r\t \u{1b}\u{2028}é\"\\".chars().collect();
    for _ in 0..2_000 {
        let n = (rng() % 8) as usize;
        let tags: Vec<String> = (0..n)
            .map(|_| {
                let len = (rng() % 20) as usize;
                (0..len)
                    .map(|_| alphabet[(rng() % alphabet.len() as u64) as usize])
                    .collect()
            })
            .collect();
        let body = serde_json::json!({"name": "x", "tags": tags}).to_string();
        tag_list::check(body.as_bytes());
    }
}

/// splitmix64, so the generated cases are the same on every run.
fn imageauto_tests_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
