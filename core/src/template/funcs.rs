//! The functions a template can call: Go's builtins and sprig's hermetic
//! string functions (with sprig's argument orders: the value comes last, so
//! that it can be piped in).

use super::value::{MAX_TEXT, Value, go_quote, sprint, sprint_value, sprintln};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// The Go type of a parameter, which decides how an argument is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Param {
    /// `string`: only strings (a literal must be a string literal).
    Str,
    /// `int`.
    Int,
    /// `interface{}`: anything, nil included.
    Any,
    /// `reflect.Value`: anything, nil included (Go's builtins).
    Value,
}

impl Param {
    pub fn go_name(self) -> &'static str {
        match self {
            Param::Str => "string",
            Param::Int => "int",
            Param::Any => "interface {}",
            Param::Value => "reflect.Value",
        }
    }

    /// Whether an untyped nil may be passed.
    pub fn can_be_nil(self) -> bool {
        matches!(self, Param::Any | Param::Value)
    }
}

pub(crate) type Imp = fn(&[Value]) -> Result<Value, String>;

pub(crate) struct Func {
    pub name: &'static str,
    pub params: &'static [Param],
    pub variadic: Option<Param>,
    pub imp: Imp,
}

use Param::{Any, Int, Str, Value as Val};

const fn f(name: &'static str, params: &'static [Param], imp: Imp) -> Func {
    Func {
        name,
        params,
        variadic: None,
        imp,
    }
}

const fn v(name: &'static str, params: &'static [Param], rest: Param, imp: Imp) -> Func {
    Func {
        name,
        params,
        variadic: Some(rest),
        imp,
    }
}

static FUNCS: &[Func] = &[
    // Go's builtins.
    v("and", &[Val], Val, and),
    v("call", &[Val], Val, call),
    v("html", &[], Any, html),
    v("index", &[Val], Val, index),
    v("js", &[], Any, js),
    f("len", &[Val], len),
    f("not", &[Val], not),
    v("or", &[Val], Val, or),
    v("print", &[], Any, print),
    v("printf", &[Str], Any, printf),
    v("println", &[], Any, println),
    v("slice", &[Val], Val, slice),
    v("urlquery", &[], Any, urlquery),
    v("eq", &[Val], Val, eq),
    f("ne", &[Val, Val], ne),
    f("lt", &[Val, Val], lt),
    f("le", &[Val, Val], le),
    f("gt", &[Val, Val], gt),
    f("ge", &[Val, Val], ge),
    // sprig.
    f("trim", &[Str], trim),
    f("trimPrefix", &[Str, Str], trim_prefix),
    f("trimSuffix", &[Str, Str], trim_suffix),
    f("upper", &[Str], upper),
    f("lower", &[Str], lower),
    f("replace", &[Str, Str, Str], replace),
    f("join", &[Str, Any], join),
    v("default", &[Any], Any, default),
    v("quote", &[], Any, quote),
    f("indent", &[Int, Str], indent),
    f("nindent", &[Int, Str], nindent),
    f("contains", &[Str, Str], contains),
    f("hasPrefix", &[Str, Str], has_prefix),
    f("hasSuffix", &[Str, Str], has_suffix),
];

pub(crate) fn lookup(name: &str) -> Option<&'static Func> {
    FUNCS.iter().find(|f| f.name == name)
}

pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    FUNCS.iter().map(|f| f.name)
}

// The executor checks the argument count and types against the signature
// before calling, so the `[a, b]` patterns below always match; they still
// return an error rather than panic.
fn arity() -> String {
    "wrong number of arguments".into()
}

/// Refuses to build a string longer than [`MAX_TEXT`].
fn too_long(size: usize) -> String {
    format!(
        "the result would be {size} bytes, more than {} MiB",
        MAX_TEXT >> 20
    )
}

fn s(v: &Value) -> Result<&str, String> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        )),
    }
}

// Logic.

fn and(args: &[Value]) -> Result<Value, String> {
    Ok(args
        .iter()
        .find(|a| !a.is_true())
        .or(args.last())
        .cloned()
        .unwrap_or(Value::Nil))
}

fn or(args: &[Value]) -> Result<Value, String> {
    Ok(args
        .iter()
        .find(|a| a.is_true())
        .or(args.last())
        .cloned()
        .unwrap_or(Value::Nil))
}

fn not(args: &[Value]) -> Result<Value, String> {
    let [a] = args else { return Err(arity()) };
    Ok(Value::Bool(!a.is_true()))
}

fn call(args: &[Value]) -> Result<Value, String> {
    match args.first() {
        None | Some(Value::Nil) => Err("call of nil".into()),
        Some(other) => Err(format!("non-function of type {}", other.type_name())),
    }
}

// Printing.

fn print(args: &[Value]) -> Result<Value, String> {
    Ok(Value::str(sprint(args)))
}

fn println(args: &[Value]) -> Result<Value, String> {
    Ok(Value::str(sprintln(args)))
}

/// The value as gotmpl's `printf` should see it. Types with a `String()`
/// method and structs become their text, which is what Go's `%v`, `%s`
/// print.
fn to_gotmpl(v: &Value) -> gotmpl::Value {
    if let Some(s) = v.stringer() {
        return gotmpl::Value::String(Arc::from(s));
    }
    match v {
        Value::Nil => gotmpl::Value::Nil,
        Value::Bool(b) => gotmpl::Value::Bool(*b),
        Value::Int(i) => gotmpl::Value::Int(*i),
        Value::Float(f) => gotmpl::Value::Float(*f),
        Value::Str(s) => gotmpl::Value::String(Arc::from(s.as_ref())),
        Value::List(l) => gotmpl::Value::List(l.items.iter().map(to_gotmpl).collect()),
        Value::Map(m) if m.key_ty == "string" => {
            let entries: BTreeMap<Arc<str>, gotmpl::Value> = m
                .entries
                .iter()
                .filter_map(|(k, v)| match k {
                    Value::Str(k) => Some((Arc::from(k.as_ref()), to_gotmpl(v))),
                    _ => None,
                })
                .collect();
            gotmpl::Value::Map(Arc::new(entries))
        }
        other => gotmpl::Value::String(Arc::from(sprint_value(other))),
    }
}

/// `fmt.Sprintf`, by gotmpl's implementation of Go's verbs and flags.
fn printf(args: &[Value]) -> Result<Value, String> {
    let Some((format, rest)) = args.split_first() else {
        return Err(arity());
    };
    let format = s(format)?;
    let mut src = String::from("{{printf (index . 0)");
    for i in 1..=rest.len() {
        src.push_str(&format!(" (index . {i})"));
    }
    src.push_str("}}");
    let mut data = vec![gotmpl::Value::String(Arc::from(format))];
    data.extend(rest.iter().map(to_gotmpl));
    gotmpl::Template::new("printf")
        .parse(&src)
        .and_then(|t| t.execute_to_string(&gotmpl::Value::List(data.into())))
        .map(Value::str)
        .map_err(|e| e.to_string())
}

/// The text `html`, `js` and `urlquery` escape: one string as it is, else
/// `fmt.Sprint` of the arguments (a missing value shows as `<no value>`).
fn escaper_input(args: &[Value]) -> String {
    if let [Value::Str(s)] = args {
        return s.to_string();
    }
    let printable: Vec<Value> = args
        .iter()
        .map(|a| match a {
            Value::Nil => Value::str("<no value>"),
            other => other.clone(),
        })
        .collect();
    sprint(&printable)
}

fn html(args: &[Value]) -> Result<Value, String> {
    Ok(Value::str(gotmpl::html_escape(&escaper_input(args))))
}

fn js(args: &[Value]) -> Result<Value, String> {
    Ok(Value::str(gotmpl::js_escape(&escaper_input(args))))
}

fn urlquery(args: &[Value]) -> Result<Value, String> {
    Ok(Value::str(gotmpl::url_encode(&escaper_input(args))))
}

// Containers.

fn len(args: &[Value]) -> Result<Value, String> {
    let [a] = args else { return Err(arity()) };
    let n = match a {
        Value::Str(s) => s.len(),
        Value::List(l) => l.items.len(),
        Value::Map(m) => m.entries.len(),
        Value::Nil => return Err("len of nil pointer".into()),
        other => return Err(format!("len of type {}", other.type_name())),
    };
    i64::try_from(n)
        .map(Value::Int)
        .map_err(|_| "length overflows int".into())
}

/// An index into something of length `len` (`cap` is `len` for our values).
fn index_arg(index: &Value, len: usize) -> Result<usize, String> {
    let x = match index {
        Value::Int(x) => *x,
        Value::Nil => return Err("cannot index slice/array with nil".into()),
        other => {
            return Err(format!(
                "cannot index slice/array with type {}",
                other.type_name()
            ));
        }
    };
    match usize::try_from(x) {
        Ok(i) if i <= len => Ok(i),
        _ => Err(format!("index out of range: {x}")),
    }
}

fn index(args: &[Value]) -> Result<Value, String> {
    let Some((item, indexes)) = args.split_first() else {
        return Err(arity());
    };
    if matches!(item, Value::Nil) {
        return Err("index of untyped nil".into());
    }
    let mut item = item.clone();
    for index in indexes {
        item = match &item {
            Value::List(l) => {
                let i = index_arg(index, l.items.len())?;
                l.items
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("index out of range: {i}"))?
            }
            Value::Str(s) => {
                let i = index_arg(index, s.len())?;
                let b = s
                    .as_bytes()
                    .get(i)
                    .ok_or_else(|| format!("index out of range: {i}"))?;
                Value::Int(i64::from(*b))
            }
            Value::Map(m) => {
                let key_ok = match index {
                    Value::Str(_) => m.key_ty == "string",
                    Value::Struct(s) => s.ty == m.key_ty,
                    Value::Nil => {
                        return Err(format!("value is nil; should be of type {}", m.key_ty));
                    }
                    _ => false,
                };
                if !key_ok {
                    return Err(format!(
                        "value has type {}; should be {}",
                        index.type_name(),
                        m.key_ty
                    ));
                }
                m.entries
                    .iter()
                    .find(|(k, _)| k.equals(index))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| m.zero.clone())
            }
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

fn slice(args: &[Value]) -> Result<Value, String> {
    let Some((item, indexes)) = args.split_first() else {
        return Err(arity());
    };
    if matches!(item, Value::Nil) {
        return Err("slice of untyped nil".into());
    }
    if indexes.len() > 3 {
        return Err(format!("too many slice indexes: {}", indexes.len()));
    }
    let len = match item {
        Value::Str(s) => {
            if indexes.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::List(l) => l.items.len(),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    let mut idx = [0, len, len];
    for (i, index) in indexes.iter().enumerate() {
        idx[i] = index_arg(index, len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if indexes.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    match item {
        Value::Str(s) => s
            .get(idx[0]..idx[1])
            .map(Value::str)
            .ok_or_else(|| "slice: index not on a UTF-8 character boundary".into()),
        Value::List(l) => Ok(Value::List(Rc::new(super::value::List {
            ty: l.ty,
            items: l.items[idx[0]..idx[1]].to_vec(),
            nil: l.nil,
        }))),
        other => Err(format!("can't slice item of type {}", other.type_name())),
    }
}

// Comparisons, as Go's text/template compares.

#[derive(Clone, Copy, PartialEq, Eq)]
enum BasicKind {
    Invalid,
    Bool,
    Int,
    Float,
    String,
}

fn basic_kind(v: &Value) -> BasicKind {
    match v {
        Value::Bool(_) => BasicKind::Bool,
        Value::Int(_) => BasicKind::Int,
        Value::Float(_) => BasicKind::Float,
        Value::Str(_) => BasicKind::String,
        _ => BasicKind::Invalid,
    }
}

fn eq(args: &[Value]) -> Result<Value, String> {
    let Some((a, rest)) = args.split_first() else {
        return Err(arity());
    };
    if rest.is_empty() {
        return Err("missing argument for comparison".into());
    }
    let k1 = basic_kind(a);
    for b in rest {
        if equal(a, k1, b)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

/// One comparison of `eq`.
fn equal(a: &Value, k1: BasicKind, b: &Value) -> Result<bool, String> {
    let k2 = basic_kind(b);
    let (a_untyped, b_untyped) = (matches!(a, Value::Nil), matches!(b, Value::Nil));
    if k1 != k2 {
        if !a_untyped && !b_untyped {
            return Err("incompatible types for comparison".into());
        }
        return Ok(false);
    }
    Ok(match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        _ => {
            // Neither is a basic type: the same kind (or an untyped nil),
            // then nil-ness, then == on comparable types.
            if std::mem::discriminant(a) != std::mem::discriminant(b) && !a_untyped && !b_untyped {
                return Err(format!(
                    "non-comparable types {}: {}, {}: {}",
                    sprint_value(a),
                    a.type_name(),
                    b.type_name(),
                    sprint_value(b)
                ));
            }
            if a.is_nil() || b.is_nil() {
                return Ok(a.is_nil() == b.is_nil());
            }
            for x in [b, a] {
                if !x.comparable() {
                    return Err(format!(
                        "non-comparable type {}: {}",
                        sprint_value(x),
                        x.type_name()
                    ));
                }
            }
            a.type_name() == b.type_name() && a.equals(b)
        }
    })
}

fn ne(args: &[Value]) -> Result<Value, String> {
    match eq(args)? {
        Value::Bool(b) => Ok(Value::Bool(!b)),
        other => Ok(other),
    }
}

fn less(args: &[Value]) -> Result<bool, String> {
    let [a, b] = args else { return Err(arity()) };
    let (k1, k2) = (basic_kind(a), basic_kind(b));
    if k1 == BasicKind::Invalid || k2 == BasicKind::Invalid {
        return Err("invalid type for comparison".into());
    }
    if k1 != k2 {
        return Err("incompatible types for comparison".into());
    }
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x < y),
        (Value::Float(x), Value::Float(y)) => Ok(x < y),
        (Value::Str(x), Value::Str(y)) => Ok(x.as_bytes() < y.as_bytes()),
        _ => Err("invalid type for comparison".into()),
    }
}

fn lt(args: &[Value]) -> Result<Value, String> {
    less(args).map(Value::Bool)
}

fn le(args: &[Value]) -> Result<Value, String> {
    // a <= b is a < b || a == b.
    let l = less(args)?;
    Ok(Value::Bool(l || matches!(eq(args)?, Value::Bool(true))))
}

fn gt(args: &[Value]) -> Result<Value, String> {
    match le(args)? {
        Value::Bool(b) => Ok(Value::Bool(!b)),
        other => Ok(other),
    }
}

fn ge(args: &[Value]) -> Result<Value, String> {
    less(args).map(|l| Value::Bool(!l))
}

// sprig.

fn str1(args: &[Value], op: fn(&str) -> String) -> Result<Value, String> {
    let [a] = args else { return Err(arity()) };
    Ok(Value::str(op(s(a)?)))
}

fn str2(args: &[Value], op: fn(&str, &str) -> Value) -> Result<Value, String> {
    let [a, b] = args else { return Err(arity()) };
    Ok(op(s(a)?, s(b)?))
}

fn trim(args: &[Value]) -> Result<Value, String> {
    // Go's strings.TrimSpace: Unicode white space.
    str1(args, |x| x.trim().to_string())
}

fn upper(args: &[Value]) -> Result<Value, String> {
    str1(args, str::to_uppercase)
}

fn lower(args: &[Value]) -> Result<Value, String> {
    str1(args, str::to_lowercase)
}

fn trim_prefix(args: &[Value]) -> Result<Value, String> {
    str2(args, |prefix, x| {
        Value::str(x.strip_prefix(prefix).unwrap_or(x))
    })
}

fn trim_suffix(args: &[Value]) -> Result<Value, String> {
    str2(args, |suffix, x| {
        Value::str(x.strip_suffix(suffix).unwrap_or(x))
    })
}

fn contains(args: &[Value]) -> Result<Value, String> {
    str2(args, |sub, x| Value::Bool(x.contains(sub)))
}

fn has_prefix(args: &[Value]) -> Result<Value, String> {
    str2(args, |prefix, x| Value::Bool(x.starts_with(prefix)))
}

fn has_suffix(args: &[Value]) -> Result<Value, String> {
    str2(args, |suffix, x| Value::Bool(x.ends_with(suffix)))
}

fn replace(args: &[Value]) -> Result<Value, String> {
    let [old, new, src] = args else {
        return Err(arity());
    };
    let (old, new, src) = (s(old)?, s(new)?, s(src)?);
    let count = if old.is_empty() {
        src.chars().count() + 1
    } else {
        src.matches(old).count()
    };
    let size = (src.len() - count * old.len()).saturating_add(count.saturating_mul(new.len()));
    if size > MAX_TEXT {
        return Err(too_long(size));
    }
    Ok(Value::str(go_replace_all(src, old, new)))
}

/// Go's `strings.Replace(s, old, new, -1)`: an empty `old` matches before
/// every character and at the end.
fn go_replace_all(src: &str, old: &str, new: &str) -> String {
    if !old.is_empty() {
        return src.replace(old, new);
    }
    let mut out = String::with_capacity(src.len() + new.len() * (src.len() + 1));
    out.push_str(new);
    for c in src.chars() {
        out.push(c);
        out.push_str(new);
    }
    out
}

/// sprig's `strval`: strings as they are, `String()` methods, else `%v`.
fn strval(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        other => sprint_value(other),
    }
}

fn join(args: &[Value]) -> Result<Value, String> {
    let [sep, list] = args else {
        return Err(arity());
    };
    let sep = s(sep)?;
    let parts: Vec<String> = match list {
        Value::List(l) if list.stringer().is_none() || l.ty == super::value::CHANGES_TYPE => l
            .items
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(strval)
            .collect(),
        Value::Nil => Vec::new(),
        other => vec![strval(other)],
    };
    Ok(Value::str(parts.join(sep)))
}

/// sprig's `empty`.
fn empty(v: &Value) -> bool {
    match v {
        Value::Nil => true,
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::Float(f) => *f == 0.0,
        Value::Str(s) => s.is_empty(),
        Value::List(l) => l.items.is_empty(),
        Value::Map(m) => m.entries.is_empty(),
        Value::Struct(_) => false,
    }
}

fn default(args: &[Value]) -> Result<Value, String> {
    let Some((d, given)) = args.split_first() else {
        return Err(arity());
    };
    match given.first() {
        Some(g) if !empty(g) => Ok(g.clone()),
        _ => Ok(d.clone()),
    }
}

fn quote(args: &[Value]) -> Result<Value, String> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil))
        .map(|v| go_quote(&strval(v)))
        .collect();
    Ok(Value::str(parts.join(" ")))
}

fn indent_text(args: &[Value]) -> Result<String, String> {
    let [n, text] = args else {
        return Err(arity());
    };
    let Value::Int(n) = n else {
        return Err(format!(
            "wrong type for value; expected int; got {}",
            n.type_name()
        ));
    };
    let n = usize::try_from(*n).map_err(|_| "strings: negative Repeat count".to_string())?;
    let text = s(text)?;
    let lines = text.matches('\n').count() + 1;
    let size = n.saturating_mul(lines).saturating_add(text.len());
    if size > MAX_TEXT {
        return Err(too_long(size));
    }
    let pad = " ".repeat(n);
    Ok(format!("{pad}{}", text.replace('\n', &format!("\n{pad}"))))
}

fn indent(args: &[Value]) -> Result<Value, String> {
    indent_text(args).map(Value::str)
}

fn nindent(args: &[Value]) -> Result<Value, String> {
    indent_text(args).map(|t| Value::str(format!("\n{t}")))
}
