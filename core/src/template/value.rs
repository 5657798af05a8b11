//! Typed values as Go's reflection sees them, and Go's `fmt` printing of
//! them (`%v`, with `String()` methods honoured at every depth).

#[cfg(test)]
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::rc::Rc;

/// The longest text a template may produce, in all and from one function.
pub(crate) const MAX_TEXT: usize = 4 << 20;

/// The Go type name of `update.Changes`, the one list type with a
/// `String()` method: its text depends on its items (slices of it keep it).
pub(crate) const CHANGES_TYPE: &str = "update.Changes";

/// A template value.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    /// Go's invalid `reflect.Value`: an untyped nil, a missing map entry.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    List(Rc<List>),
    Map(Rc<Map>),
    Struct(Rc<Struct>),
}

/// A slice.
#[derive(Debug)]
pub(crate) struct List {
    pub ty: &'static str,
    pub items: Vec<Value>,
    /// A nil slice (prints as an empty one; `eq` tells them apart).
    pub nil: bool,
}

/// A map, its entries in Go's `fmtsort` order.
#[derive(Debug)]
pub(crate) struct Map {
    pub ty: &'static str,
    /// `string`, or the struct type of the keys.
    pub key_ty: &'static str,
    pub entries: Vec<(Value, Value)>,
    /// What indexing a missing key gives (the zero value of the elements).
    pub zero: Value,
    /// The result of the type's `String()` method, if it has one.
    pub string: Option<String>,
    /// A nil map (prints as an empty one; `eq` tells them apart).
    pub nil: bool,
}

/// A struct, with its exported fields in declaration order and the results
/// of its methods that take no arguments.
#[derive(Debug)]
pub(crate) struct Struct {
    pub ty: &'static str,
    pub fields: Vec<Field>,
    pub methods: Vec<(&'static str, Value)>,
    /// The result of the type's `String()` method, if it has one.
    pub string: Option<String>,
    /// All fields comparable with `==` (no maps or slices).
    pub comparable: bool,
}

#[derive(Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub value: Value,
    /// An embedded struct: its fields are promoted.
    pub embedded: bool,
}

impl Value {
    pub fn str(s: impl AsRef<str>) -> Value {
        Value::Str(Rc::from(s.as_ref()))
    }

    /// The Go type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(l) => l.ty,
            Value::Map(m) => m.ty,
            Value::Struct(s) => s.ty,
        }
    }

    /// The result of the value's `String()` method, if its type has one.
    pub fn stringer(&self) -> Option<String> {
        match self {
            Value::List(l) if l.ty == CHANGES_TYPE => Some(changes_string(&l.items)),
            Value::Map(m) => m.string.clone(),
            Value::Struct(s) => s.string.clone(),
            _ => None,
        }
    }

    /// A method without arguments, by name (methods come before fields).
    pub fn method(&self, name: &str) -> Option<Value> {
        if let Value::Struct(s) = self
            && let Some((_, v)) = s.methods.iter().find(|(n, _)| *n == name)
        {
            return Some(v.clone());
        }
        if name == "String" {
            return self.stringer().map(Value::str);
        }
        None
    }

    /// Go's truth: not the zero value of its type; structs are always true.
    pub fn is_true(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.items.is_empty(),
            Value::Map(m) => !m.entries.is_empty(),
            Value::Struct(_) => true,
        }
    }

    /// Go's `==` on comparable values (callers check comparability first).
    pub fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Struct(a), Value::Struct(b)) => {
                a.ty == b.ty
                    && a.fields.len() == b.fields.len()
                    && a.fields
                        .iter()
                        .zip(&b.fields)
                        .all(|(x, y)| x.value.equals(&y.value))
                    && a.methods.len() == b.methods.len()
                    && a.methods
                        .iter()
                        .zip(&b.methods)
                        .all(|((_, x), (_, y))| x.equals(y))
            }
            _ => false,
        }
    }

    /// Nil, a nil slice or a nil map.
    pub fn is_nil(&self) -> bool {
        match self {
            Value::Nil => true,
            Value::List(l) => l.nil,
            Value::Map(m) => m.nil,
            _ => false,
        }
    }

    /// Whether Go can compare values of this type with `==`.
    pub fn comparable(&self) -> bool {
        match self {
            Value::List(_) | Value::Map(_) => false,
            Value::Struct(s) => s.comparable,
            _ => true,
        }
    }
}

impl Struct {
    /// Go's `FieldByName`: a direct field, else the shallowest promoted one
    /// (two at the same depth hide each other).
    pub fn field(&self, name: &str) -> Option<Value> {
        let mut level: Vec<&Struct> = vec![self];
        while !level.is_empty() {
            let mut found: Vec<&Value> = Vec::new();
            let mut next = Vec::new();
            for s in &level {
                for f in &s.fields {
                    if f.name == name {
                        found.push(&f.value);
                    }
                    if f.embedded
                        && let Value::Struct(inner) = &f.value
                    {
                        next.push(inner.as_ref());
                    }
                }
            }
            match found.as_slice() {
                [one] => return Some((*one).clone()),
                [] => level = next,
                _ => return None,
            }
        }
        None
    }
}

/// Go's `fmtsort` order of two map keys of the same type.
#[cfg(test)]
pub(crate) fn compare_keys(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::Struct(x), Value::Struct(y)) => x
            .fields
            .iter()
            .zip(&y.fields)
            .map(|(f, g)| compare_keys(&f.value, &g.value))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal),
        _ => Ordering::Equal,
    }
}

/// `fmt.Sprint(v)`: `%v`, a `String()` method wins at every depth.
pub(crate) fn sprint_value(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

pub(crate) fn write_value(out: &mut String, v: &Value) {
    if let Some(s) = v.stringer() {
        out.push_str(&s);
        return;
    }
    match v {
        Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&format_float(*f)),
        Value::Str(s) => out.push_str(s),
        Value::List(l) => {
            out.push('[');
            for (i, item) in l.items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, v)) in m.entries.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push(']');
        }
        Value::Struct(s) => {
            out.push('{');
            for (i, f) in s.fields.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, &f.value);
            }
            out.push('}');
        }
    }
}

/// `fmt.Sprint(args...)`: a space between operands when neither is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, arg) in args.iter().enumerate() {
        let is_string = matches!(arg, Value::Str(_));
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        write_value(&mut out, arg);
        prev_string = is_string;
    }
    out
}

/// `fmt.Sprintln(args...)`: spaces between all operands, then a newline.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_value(&mut out, arg);
    }
    out.push('\n');
    out
}

/// A float as Go's `%v` prints it: `%g` with the shortest precision, which
/// switches to an exponent from 1e+06 up and below 1e-04.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.5e7", "-1e-5".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`, closely: graphic characters and the ASCII space.
/// (Non-ASCII spaces, format characters, private use and noncharacters are
/// not printable.)
fn is_print(c: char) -> bool {
    let u = c as u32;
    if u < 0x80 {
        return (0x20..0x7f).contains(&u);
    }
    !(c.is_control()
        || c.is_whitespace()
        || u == 0xad
        || (0x200b..=0x200f).contains(&u)
        || (0x202a..=0x202e).contains(&u)
        || (0x2060..=0x206f).contains(&u)
        || u == 0xfeff
        || (0xfff9..=0xfffb).contains(&u)
        || (0xe000..=0xf8ff).contains(&u)
        || u >= 0xf0000
        || (u & 0xfffe) == 0xfffe)
}

/// The fields of an `update.Change` value, if it is one.
pub(crate) fn change_fields(v: &Value) -> Option<(String, String, String)> {
    let Value::Struct(s) = v else { return None };
    let get = |name: &str| match s.field(name) {
        Some(Value::Str(x)) => Some(x.to_string()),
        _ => None,
    };
    Some((get("OldValue")?, get("NewValue")?, get("Setter")?))
}

/// Sorts changes as Flux does: by setter, then old value, then new value.
pub(crate) fn sort_changes(changes: &mut [(String, String, String)]) {
    changes.sort_by(|a, b| (&a.2, &a.0, &a.1).cmp(&(&b.2, &b.0, &b.1)));
}

/// `update.Changes.String()`: the changes sorted, each quoted.
pub(crate) fn changes_string(items: &[Value]) -> String {
    let mut changes: Vec<(String, String, String)> =
        items.iter().filter_map(change_fields).collect();
    sort_changes(&mut changes);
    let mut out = String::from("[");
    for (i, (old, new, setter)) in changes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(
            out,
            "{{OldValue:{} NewValue:{} Setter:{}}}",
            go_quote(old),
            go_quote(new),
            go_quote(setter)
        );
    }
    out.push(']');
    out
}
