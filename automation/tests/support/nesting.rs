//! Deeply nested YAML from a byte string, for the `yaml_nesting` fuzz target
//! and the property test that runs the same checks: the reader refuses
//! nesting past its limit with an error (never a stack overflow or a panic),
//! and the setters, the lint and the loader stay within bounds.

use automation::yaml::{self, MAX_DEPTH};

/// Builds a document from `data`: each byte opens a flow sequence, a flow
/// mapping, a block mapping or a block sequence (the low two bits), repeated
/// by the byte's high bits, and a marked scalar sits at the bottom.
pub fn generate(data: &[u8]) -> (String, usize) {
    let mut head = String::new();
    let mut tail = String::new();
    let mut indent = 0usize;
    let mut depth = 0usize;
    let mut in_flow = false;
    for &b in data {
        let times = 1 + usize::from(b >> 2) * 4;
        for _ in 0..times {
            if !in_flow && b & 3 < 2 {
                // A flow collection inside block ones: at the block's indent.
                head.push_str(&" ".repeat(indent));
            }
            match (b & 3, in_flow) {
                (0, _) => {
                    head.push('[');
                    tail.insert(0, ']');
                    in_flow = true;
                }
                (1, _) => {
                    head.push_str("{k: ");
                    tail.insert(0, '}');
                    in_flow = true;
                }
                (2, false) => {
                    head.push_str(&format!("{}k{depth}:\n", " ".repeat(indent)));
                    indent += 1;
                }
                (_, false) => {
                    head.push_str(&format!("{}-\n", " ".repeat(indent)));
                    indent += 1;
                }
                (_, true) => {
                    head.push('[');
                    tail.insert(0, ']');
                }
            }
            depth += 1;
        }
    }
    let value = "ghcr.io/org/web:1.0.0 # {\"$imagepolicy\": \"ns:p\"}";
    let text = if in_flow {
        format!("{head}x{tail} # {{\"$imagepolicy\": \"ns:p\"}}\n")
    } else {
        format!("{head}{}{value}\n", " ".repeat(indent))
    };
    (text, depth)
}

/// The reader refuses past its limit and reads below it; nothing panics.
pub fn check(data: &[u8]) {
    let (text, depth) = generate(data);
    let parsed = yaml::parse(&text);
    if depth + 1 > MAX_DEPTH {
        // The root counts as one level: beyond the limit, an error that says so.
        if let Err(e) = &parsed {
            assert!(e.message.contains("nested deeper"), "{e}");
        }
    } else if depth < MAX_DEPTH / 2 {
        let docs = parsed.unwrap_or_else(|e| panic!("depth {depth} refused: {e}"));
        for d in &docs {
            let _ = d.root.to_json();
        }
    }
    let _ = automation::setters::scan(&text);
    let _ = automation::lint::lint(&[("f.yaml".to_string(), text.clone())], &[]);
    let _ = automation::api::load_str("f.yaml", &text);
}
