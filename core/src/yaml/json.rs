//! A node as JSON (anchors and aliases resolved, scalars typed as YAML 1.2's
//! core schema reads them), and its accessors.

use super::*;

impl Node {
    /// The scalar's text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value under `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Mapping(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a dotted path of mapping keys (`spec.policy.semver`) and returns the
    /// deepest node reached, for pointing at the place of a problem.
    pub fn locate(&self, path: &[&str]) -> &Node {
        let mut node = self;
        for key in path {
            match node.get_entry(key) {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }

    /// Like [`Node::get`], but returns the key node itself when asked for the last
    /// element: used to point at an unknown field's key.
    fn get_entry(&self, key: &str) -> Option<&Node> {
        if let NodeKind::Sequence(items) = &self.kind {
            return key.parse::<usize>().ok().and_then(|i| items.get(i));
        }
        self.get(key)
    }

    /// The key node of `key` in this mapping.
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Mapping(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, _)| k),
            _ => None,
        }
    }

    /// Converts to JSON with YAML 1.2 core-schema resolution of plain scalars,
    /// aliases expanded (up to a bound).
    pub fn to_json(&self) -> Result<Value, String> {
        let mut anchors = HashMap::new();
        collect_anchors(self, &mut anchors);
        let mut budget = MAX_ALIAS_EXPANSION;
        to_json(self, &anchors, &mut budget)
    }
}

pub(super) fn collect_anchors<'a>(node: &'a Node, anchors: &mut HashMap<&'a str, &'a Node>) {
    if let Some(a) = &node.anchor {
        anchors.insert(a.as_str(), node);
    }
    match &node.kind {
        NodeKind::Sequence(items) => items.iter().for_each(|n| collect_anchors(n, anchors)),
        NodeKind::Mapping(pairs) => pairs.iter().for_each(|(k, v)| {
            collect_anchors(k, anchors);
            collect_anchors(v, anchors);
        }),
        _ => {}
    }
}

pub(super) fn to_json(
    node: &Node,
    anchors: &HashMap<&str, &Node>,
    budget: &mut usize,
) -> Result<Value, String> {
    if *budget == 0 {
        return Err("too many nodes after expanding aliases".to_string());
    }
    *budget -= 1;
    Ok(match &node.kind {
        NodeKind::Scalar { value, style, tag } => scalar_value(value, *style, tag.as_deref()),
        NodeKind::Alias(name) => match anchors.get(name.as_str()) {
            Some(target) => to_json(target, anchors, budget)?,
            None => return Err(format!("unknown alias *{name}")),
        },
        NodeKind::Sequence(items) => Value::Array(
            items
                .iter()
                .map(|n| to_json(n, anchors, budget))
                .collect::<Result<_, _>>()?,
        ),
        NodeKind::Mapping(pairs) => {
            let mut map = Map::new();
            for (k, v) in pairs {
                let key = match to_json(k, anchors, budget)? {
                    Value::String(s) => s,
                    Value::Null => "null".to_string(),
                    other => other.to_string(),
                };
                if key == "<<" {
                    // Merge key: fold the referenced mapping(s) in, without
                    // overriding keys given explicitly.
                    let merged = to_json(v, anchors, budget)?;
                    let sources = match merged {
                        Value::Array(a) => a,
                        other => vec![other],
                    };
                    for src in sources {
                        if let Value::Object(obj) = src {
                            for (mk, mv) in obj {
                                map.entry(mk).or_insert(mv);
                            }
                        }
                    }
                    continue;
                }
                map.insert(key, to_json(v, anchors, budget)?);
            }
            Value::Object(map)
        }
    })
}

/// Resolves a scalar the way YAML 1.2's core schema does.
pub fn scalar_value(value: &str, style: Style, tag: Option<&str>) -> Value {
    match tag {
        Some("tag:yaml.org,2002:str") => return Value::String(value.to_string()),
        Some("tag:yaml.org,2002:null") => return Value::Null,
        _ => {}
    }
    if style != Style::Plain {
        return Value::String(value.to_string());
    }
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(value) {
        return Value::Number(n);
    }
    if let Some(f) = parse_float(value)
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(value.to_string())
}

pub(super) fn parse_int(s: &str) -> Option<Number> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if neg {
        i64::from_str_radix(&format!("-{digits}"), radix)
            .ok()
            .map(Number::from)
    } else {
        u64::from_str_radix(digits, radix).ok().map(Number::from)
    }
}

pub(super) fn parse_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let body = match b.first()? {
        b'-' | b'+' => &s[1..],
        _ => s,
    };
    match body {
        ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN" => return None,
        _ => {}
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let mut chars = body.bytes().peekable();
    let mut mantissa_digits = 0;
    while chars.peek().is_some_and(u8::is_ascii_digit) {
        chars.next();
        mantissa_digits += 1;
    }
    if chars.peek() == Some(&b'.') {
        chars.next();
        while chars.peek().is_some_and(u8::is_ascii_digit) {
            chars.next();
            mantissa_digits += 1;
        }
    }
    if mantissa_digits == 0 {
        return None;
    }
    if matches!(chars.peek(), Some(b'e' | b'E')) {
        chars.next();
        if matches!(chars.peek(), Some(b'+' | b'-')) {
            chars.next();
        }
        let mut exp = 0;
        while chars.peek().is_some_and(u8::is_ascii_digit) {
            chars.next();
            exp += 1;
        }
        if exp == 0 {
            return None;
        }
    }
    if chars.next().is_some() {
        return None;
    }
    s.parse().ok()
}
