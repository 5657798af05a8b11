//! Numbers as Go's `strconv.ParseFloat(s, 64)` reads them, which is what
//! Flux's numerical policy accepts: decimal and hexadecimal (`0x1p-2`)
//! floating-point literals, `_` between digits, `inf`/`infinity` with an
//! optional sign and `nan` (any case). A finite literal beyond the range of
//! f64 is an error, as in Go.

/// Parses `s` as Go's ParseFloat does; `None` where Go returns an error.
pub fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    if let Some(v) = special(s) {
        return Some(v);
    }
    if s.contains('_') && !underscore_ok(s) {
        return None;
    }
    let cleaned: String;
    let s = if s.contains('_') {
        cleaned = s.replace('_', "");
        &cleaned
    } else {
        s
    };
    let (negative, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let value = if body.len() > 2 && (body.starts_with("0x") || body.starts_with("0X")) {
        hex_float(&body[2..])?
    } else {
        decimal_float(body)?
    };
    Some(if negative { -value } else { value })
}

fn special(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    }
}

/// Go's underscoreOK: `_` only between digits (a base prefix counts as one).
fn underscore_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let b = if !b.is_empty() && (b[0] == b'-' || b[0] == b'+') {
        &b[1..]
    } else {
        b
    };
    let mut saw = b'^';
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// `digits[.digits][(e|E)[+-]digits]` with at least one mantissa digit.
fn decimal_float(body: &str) -> Option<f64> {
    let b = body.as_bytes();
    let mut i = 0;
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    let v: f64 = body.parse().ok()?;
    v.is_finite().then_some(v)
}

/// `hexdigits[.hexdigits](p|P)[+-]digits`: the binary exponent is required.
fn hex_float(body: &str) -> Option<f64> {
    let b = body.as_bytes();
    let mut i = 0;
    let mut mantissa: f64 = 0.0;
    let mut digits = 0;
    let mut scale: i64 = 0;
    let mut after_point = false;
    while i < b.len() {
        let c = b[i];
        if c == b'.' && !after_point {
            after_point = true;
            i += 1;
            continue;
        }
        let Some(d) = (c as char).to_digit(16) else {
            break;
        };
        mantissa = mantissa * 16.0 + f64::from(d);
        digits += 1;
        if after_point {
            scale -= 4;
        }
        i += 1;
    }
    if digits == 0 || i >= b.len() || !(b[i] == b'p' || b[i] == b'P') {
        return None;
    }
    let exp: i64 = body[i + 1..].parse().ok()?;
    let v = mantissa * 2f64.powi((exp + scale).clamp(-2000, 2000) as i32);
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::parse_float;

    #[test]
    fn go_parse_float_cases() {
        // Each value checked against Go's strconv.ParseFloat.
        let ok: &[(&str, f64)] = &[
            ("1_000", 1000.0),
            ("0x1_0p0", 16.0),
            ("4e-400", 0.0),
            ("+inf", f64::INFINITY),
            ("Infinity", f64::INFINITY),
            ("0x1p-2", 0.25),
            ("0x1.8p1", 3.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("00012", 12.0),
            ("1e+5", 100000.0),
            ("-3", -3.0),
            ("1700000000", 1_700_000_000.0),
        ];
        for (s, want) in ok {
            assert_eq!(parse_float(s), Some(*want), "{s}");
        }
        assert!(parse_float("nan").is_some_and(f64::is_nan));
        for bad in [
            "1e400", "+nan", "infin", "  1", "1e", "0x10", "1__0", "_1", "0b10", "0o7", "",
            "1.2.3", "abc", "1e_5", "1_",
        ] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
    }
}
