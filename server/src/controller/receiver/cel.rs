//! CEL as Flux's Receivers use it (fluxcd/pkg `runtime/cel/expression.go`,
//! notification-controller `internal/server/receiver_resource_filter.go`
//! and `receiver_claims.go`): expressions over variables that are JSON
//! objects (`res`, `req`, `claims`, `vars`), checked when the Receiver is
//! reconciled (a reference to an undeclared variable, a filter whose
//! result is not a boolean) and evaluated with the `cel` crate.
//!
//! The check is the part of cel-go's type checker that Flux's messages
//! depend on: the declared names and the result type. Where cel-go would
//! infer a type this cannot tell (a field of a JSON object is `dyn`), the
//! result is `dyn`, which Flux refuses for a filter as well.

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use cel::objects::{Key, Map, Value};
use cel::{Context, Env, Program};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

/// A compiled expression.
#[derive(Debug)]
pub struct Expression {
    source: String,
    program: Program,
}

/// What an expression must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Bool,
    Any,
}

/// Flux's environment: the standard library, strings and encoders (cel-go's
/// `ext.Sets` has no counterpart in the crate).
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Adding the crate's own extensions to a fresh standard library
        // cannot conflict; if one ever did, the expressions that use it
        // fail to evaluate instead.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::encoders);
        Arc::new(env)
    })
    .clone()
}

/// Names that are not variables: the type names and the namespaces of the
/// extension functions.
const BUILTIN: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
    "base64",
    "strings",
    "math",
    "optional",
    "sets",
];

/// The static type of a subexpression, as far as the check can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    List,
    Map,
    /// A declared variable: a JSON object (`google.protobuf.Struct`).
    Struct,
    Type,
    Dyn,
}

impl Ty {
    fn name(&self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Uint => "uint",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Bytes => "bytes",
            Ty::Null => "null_type",
            Ty::List => "list(dyn)",
            Ty::Map => "map(dyn, dyn)",
            Ty::Struct => "map(string, dyn)",
            Ty::Type => "type",
            Ty::Dyn => "dyn",
        }
    }
}

struct Checker<'a> {
    source: &'a str,
    program: &'a Program,
    declared: &'a [&'a str],
    scope: Vec<String>,
    undeclared: Vec<String>,
}

impl Checker<'_> {
    /// `ERROR: <input>:LINE:COLUMN:` of a node, as cel-go writes it.
    fn position(&self, id: u64) -> String {
        let Some((start, _)) = self.program.source_info().offset_for(id) else {
            return "ERROR: <input>:1:1:".into();
        };
        let start = (start as usize).min(self.source.len());
        let before = self.source.get(..start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("ERROR: <input>:{line}:{column}:")
    }

    fn ty(&mut self, e: &IdedExpr) -> Ty {
        match &e.expr {
            Expr::Unspecified => Ty::Dyn,
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::UInt(_) => Ty::Uint,
            },
            Expr::Ident(name) => {
                if self.scope.iter().rev().any(|s| s == name) {
                    Ty::Dyn
                } else if self.declared.contains(&name.as_str()) {
                    Ty::Struct
                } else if BUILTIN.contains(&name.as_str()) {
                    Ty::Type
                } else {
                    let at = self.position(e.id);
                    self.undeclared.push(format!(
                        "{at} undeclared reference to '{name}' (in container '')"
                    ));
                    Ty::Dyn
                }
            }
            Expr::Select(s) => {
                self.ty(&s.operand);
                if s.test { Ty::Bool } else { Ty::Dyn }
            }
            Expr::List(l) => {
                for x in &l.elements {
                    self.ty(x);
                }
                Ty::List
            }
            Expr::Map(m) => {
                for x in &m.entries {
                    match &x.expr {
                        cel::common::ast::EntryExpr::MapEntry(me) => {
                            self.ty(&me.key);
                            self.ty(&me.value);
                        }
                        cel::common::ast::EntryExpr::StructField(f) => {
                            self.ty(&f.value);
                        }
                    }
                }
                Ty::Map
            }
            Expr::Struct(s) => {
                for x in &s.entries {
                    if let cel::common::ast::EntryExpr::StructField(f) = &x.expr {
                        self.ty(&f.value);
                    }
                }
                Ty::Dyn
            }
            Expr::Comprehension(c) => {
                self.ty(&c.iter_range);
                let accu = self.ty(&c.accu_init);
                self.scope.push(c.accu_var.clone());
                self.scope.push(c.iter_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.scope.push(v.clone());
                }
                self.ty(&c.loop_cond);
                self.ty(&c.loop_step);
                let n = self.scope.len();
                self.scope
                    .truncate(n - 2 - usize::from(c.iter_var2.is_some()));
                // The result reads the accumulator, typed by its start.
                self.scope.push(c.iter_var.clone());
                let result = match &c.result.expr {
                    Expr::Ident(n) if *n == c.accu_var => accu,
                    _ => {
                        self.scope.push(c.accu_var.clone());
                        let t = self.ty(&c.result);
                        self.scope.pop();
                        t
                    }
                };
                self.scope.pop();
                result
            }
            Expr::Call(call) => self.call(call),
        }
    }

    fn call(&mut self, call: &cel::common::ast::CallExpr) -> Ty {
        let namespaced = matches!(
            call.target.as_deref().map(|t| &t.expr),
            Some(Expr::Ident(n)) if BUILTIN.contains(&n.as_str())
                && !self.declared.contains(&n.as_str())
                && !self.scope.contains(n)
        );
        let target = match (&call.target, namespaced) {
            (Some(t), false) => Some(self.ty(t)),
            _ => None,
        };
        let args: Vec<Ty> = call.args.iter().map(|a| self.ty(a)).collect();
        let same = |a: &[Ty]| match a {
            [x, y] if x == y && *x != Ty::Struct => x.clone(),
            _ => Ty::Dyn,
        };
        match call.func_name.as_str() {
            "_&&_"
            | "_||_"
            | "!_"
            | "_==_"
            | "_!=_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "@in"
            | "in"
            | "@not_strictly_false"
            | "startsWith"
            | "endsWith"
            | "contains"
            | "matches"
            | "bool"
            | "exists"
            | "all"
            | "exists_one"
            | "hasValue" => Ty::Bool,
            "size" | "int" | "indexOf" | "lastIndexOf" => Ty::Int,
            "uint" => Ty::Uint,
            "double" => Ty::Double,
            "string" | "lowerAscii" | "upperAscii" | "trim" | "replace" | "substring"
            | "charAt" | "format" | "join" | "quote" | "reverse" => Ty::String,
            "encode" if namespaced => Ty::String,
            "decode" if namespaced => Ty::Bytes,
            "bytes" => Ty::Bytes,
            "split" => Ty::List,
            "type" => Ty::Type,
            "_?_:_" => match args.as_slice() {
                [_, a, b] if a == b && *a != Ty::Struct => a.clone(),
                _ => Ty::Dyn,
            },
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" => same(&args),
            "-_" => match args.as_slice() {
                [t @ (Ty::Int | Ty::Double)] => t.clone(),
                _ => Ty::Dyn,
            },
            _ => {
                let _ = target;
                Ty::Dyn
            }
        }
    }
}

impl Expression {
    /// Parses and checks `source` with `declared` variables (JSON
    /// objects); with [`Output::Bool`], the result must be a boolean.
    /// Errors read as Flux's (`failed to parse the CEL expression ...`,
    /// `CEL expression output type mismatch: ...`).
    pub fn compile(source: &str, declared: &[&str], output: Output) -> Result<Expression, String> {
        let program = env()
            .compile(source)
            .map_err(|e| format!("failed to parse the CEL expression '{source}': {e}"))?;
        let (undeclared, ty) = {
            let mut c = Checker {
                source,
                program: &program,
                declared,
                scope: Vec::new(),
                undeclared: Vec::new(),
            };
            let ty = c.ty(program.expression());
            (c.undeclared, ty)
        };
        if !undeclared.is_empty() {
            let unique: BTreeSet<String> = undeclared.into_iter().collect();
            let issues: Vec<String> = unique.into_iter().collect();
            return Err(format!(
                "failed to parse the CEL expression '{source}': {}",
                issues.join("\n")
            ));
        }
        if output == Output::Bool && ty != Ty::Bool {
            return Err(format!(
                "CEL expression output type mismatch: expected bool, got {}",
                ty.name()
            ));
        }
        Ok(Expression {
            source: source.to_string(),
            program,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates with these variables.
    pub fn evaluate(&self, vars: &[(&str, Value)]) -> Result<Value, String> {
        let mut ctx = Context::with_env(env());
        for (name, value) in vars {
            ctx.add_variable_from_value(*name, value.clone());
        }
        self.program.execute(&ctx).map_err(|e| {
            format!(
                "failed to evaluate the CEL expression '{}': {e}",
                self.source
            )
        })
    }

    /// Evaluates to a boolean, or says why not.
    pub fn evaluate_bool(&self, vars: &[(&str, Value)]) -> Result<bool, String> {
        match self.evaluate(vars)? {
            Value::Bool(b) => Ok(b),
            _ => Err(format!(
                "failed to evaluate CEL expression as boolean: '{}'",
                self.source
            )),
        }
    }
}

/// A JSON value as CEL sees a `google.protobuf.Struct` member: every
/// number a double (Go decodes JSON numbers into float64).
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(from_json).collect())),
        serde_json::Value::Object(o) => map(o.iter().map(|(k, v)| (k.clone(), from_json(v)))),
    }
}

/// A CEL map with string keys.
pub fn map(entries: impl IntoIterator<Item = (String, Value)>) -> Value {
    let m: HashMap<Key, Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::String(Arc::new(k)), v))
        .collect();
    Value::Map(Map { map: Arc::new(m) })
}

/// Flux's OIDC claims processor (`receiver_claims.go`): the provider's
/// variables, then its validations, over the verified claims.
pub struct ClaimsProcessor {
    variables: Vec<(String, Expression)>,
    validations: Vec<(Expression, String)>,
}

impl ClaimsProcessor {
    pub fn new(p: &crate::api::OidcProvider) -> Result<ClaimsProcessor, String> {
        let mut variables = Vec::new();
        for v in &p.variables {
            let e = Expression::compile(&v.expression, &["claims", "vars"], Output::Any)
                .map_err(|e| format!("invalid expression for variable {:?}: {e}", v.name))?;
            variables.push((v.name.clone(), e));
        }
        let mut validations = Vec::new();
        for v in &p.validations {
            let e = Expression::compile(&v.expression, &["claims", "vars"], Output::Bool)
                .map_err(|e| format!("invalid expression for validation {:?}: {e}", v.message))?;
            validations.push((e, v.message.clone()));
        }
        Ok(ClaimsProcessor {
            variables,
            validations,
        })
    }

    /// Whether the claims pass every validation; the messages of those
    /// that fail, joined as Flux joins them.
    pub fn evaluate(&self, claims: &serde_json::Value) -> Result<(), String> {
        let claims = from_json(claims);
        let mut vars: Vec<(String, Value)> = Vec::new();
        let current = |vars: &Vec<(String, Value)>| map(vars.iter().cloned());
        for (name, e) in &self.variables {
            let v = e
                .evaluate(&[("claims", claims.clone()), ("vars", current(&vars))])
                .map_err(|err| format!("failed to evaluate variable {name:?}: {err}"))?;
            vars.retain(|(n, _)| n != name);
            vars.push((name.clone(), v));
        }
        let mut failures = Vec::new();
        for (e, message) in &self.validations {
            let ok = e
                .evaluate_bool(&[("claims", claims.clone()), ("vars", current(&vars))])
                .map_err(|err| format!("failed to evaluate validation: {err}"))?;
            if !ok {
                failures.push(message.as_str());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("token validation failed: {}", failures.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTER: &[&str] = &["res", "req"];

    #[test]
    fn checks_as_fluxs_compile_step() {
        // fluxcd/pkg runtime/cel/expression_test.go: undeclared names,
        // a result that is not a boolean, a field of a JSON object (dyn).
        let e = Expression::compile("foo", FILTER, Output::Bool).unwrap_err();
        assert!(
            e.contains("ERROR: <input>:1:1: undeclared reference to 'foo'"),
            "{e}"
        );
        let e = Expression::compile("'foo'", FILTER, Output::Bool).unwrap_err();
        assert_eq!(
            e,
            "CEL expression output type mismatch: expected bool, got string"
        );
        let e = Expression::compile("res.metadata.name", FILTER, Output::Bool).unwrap_err();
        assert_eq!(
            e,
            "CEL expression output type mismatch: expected bool, got dyn"
        );
        let e = Expression::compile("foo.", FILTER, Output::Bool).unwrap_err();
        assert!(
            e.starts_with("failed to parse the CEL expression 'foo.': ERROR: <input>:1:"),
            "{e}"
        );
        for ok in [
            "res.metadata.name == 'web'",
            "res.metadata.name == true",
            "has(req.events) && req.events.exists(e, e.action == 'push')",
            "req.events.all(e, e.target.repository.startsWith('team/'))",
            "res.metadata.name in ['a', 'b'] || !(size(req) > 0)",
            "'x'.startsWith('x') ? true : false",
            "req.repository.repo_name.lowerAscii().endsWith('/web')",
        ] {
            Expression::compile(ok, FILTER, Output::Bool).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        // A macro's own variable is declared inside it only.
        let e = Expression::compile("req.a.exists(x, x == 1) && x == 2", FILTER, Output::Bool)
            .unwrap_err();
        assert!(e.contains("undeclared reference to 'x'"), "{e}");
        // claims only where declared.
        assert!(Expression::compile("claims.sub == 'a'", FILTER, Output::Bool).is_err());
        assert!(
            Expression::compile("claims.sub == 'a'", &["res", "req", "claims"], Output::Bool)
                .is_ok()
        );
    }

    #[test]
    fn evaluates_over_json() {
        let e = Expression::compile(
            "req.events.exists(e, e.target.repository == res.metadata.labels.repo) && req.count == 2",
            FILTER,
            Output::Bool,
        )
        .unwrap();
        let req = from_json(&serde_json::json!({
            "events": [{"target": {"repository": "team/web"}}],
            "count": 2
        }));
        let res = |repo: &str| {
            from_json(&serde_json::json!({"metadata": {"name": "x", "labels": {"repo": repo}}}))
        };
        assert_eq!(
            e.evaluate_bool(&[("res", res("team/web")), ("req", req.clone())]),
            Ok(true)
        );
        assert_eq!(
            e.evaluate_bool(&[("res", res("team/db")), ("req", req.clone())]),
            Ok(false)
        );
        // A missing key is an evaluation error, as in cel-go.
        let e = Expression::compile("req.nothing == 'x'", FILTER, Output::Bool).unwrap();
        assert!(
            e.evaluate_bool(&[("res", res("a")), ("req", req)])
                .unwrap_err()
                .starts_with("failed to evaluate the CEL expression 'req.nothing == 'x''")
        );
    }

    #[test]
    fn claims_as_fluxs_processor() {
        // notification-controller internal/server/receiver_claims_test.go
        let p: crate::api::OidcProvider = serde_json::from_value(serde_json::json!({
            "issuerURL": "https://token.actions.githubusercontent.com",
            "variables": [{"name": "owner", "expression": "claims.repository_owner"}],
            "validations": [
                {"expression": "vars.owner == 'fluxcd'", "message": "owner must be fluxcd"},
                {"expression": "claims.ref == 'refs/heads/main'", "message": "ref must be main"}
            ]
        }))
        .unwrap();
        let cp = ClaimsProcessor::new(&p).unwrap();
        assert_eq!(
            cp.evaluate(
                &serde_json::json!({"repository_owner": "fluxcd", "ref": "refs/heads/main"})
            ),
            Ok(())
        );
        assert_eq!(
            cp.evaluate(&serde_json::json!({"repository_owner": "other", "ref": "refs/heads/dev"})),
            Err("token validation failed: owner must be fluxcd; ref must be main".into())
        );
        let bad: crate::api::OidcProvider = serde_json::from_value(serde_json::json!({
            "issuerURL": "https://x",
            "validations": [{"expression": "claims.sub", "message": "m"}]
        }))
        .unwrap();
        assert!(ClaimsProcessor::new(&bad).err().unwrap().starts_with(
            "invalid expression for validation \"m\": CEL expression output type mismatch"
        ));
    }
}
