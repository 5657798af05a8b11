//! Parsing (gotmpl's parser plus the checks Go's parser makes) and
//! execution of a template with Go's `text/template` rules (exec.go):
//! fields and methods, map lookups, pipelines, variables, `if`/`with`/
//! `range`/`template`, `break`/`continue`, and function calls whose
//! arguments are checked against the function's parameter types.

use super::funcs::{self, Func, Param};
use super::value::{MAX_TEXT, Value, format_float, go_quote, write_value};
use super::{TEMPLATE_NAME, TemplateError, structure};
use gotmpl::parse::{
    BranchNode, CommandNode, Expr, ListNode, Node, Number, Parser, PipeNode, Pos, TemplateNode,
};
use std::collections::BTreeMap;

/// Nested `{{template}}` calls allowed (Go allows 100000; a commit message
/// that needs more is a runaway recursion).
const MAX_DEPTH: usize = 200;
/// Actions and iterations allowed in one execution.
const MAX_STEPS: u64 = 1_000_000;

/// A parsed and checked template.
pub(crate) struct Program {
    source: String,
    main: ListNode,
    defines: BTreeMap<String, ListNode>,
}

/// The 1-based line and column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = &src[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn parse_error(src: &str, offset: usize, message: String) -> TemplateError {
    let (line, column) = line_col(src, offset);
    TemplateError::Parse {
        line,
        column,
        message,
    }
}

fn from_gotmpl(e: gotmpl::TemplateError) -> TemplateError {
    match e {
        gotmpl::TemplateError::Parse {
            line, col, message, ..
        }
        | gotmpl::TemplateError::Lex {
            line, col, message, ..
        } => TemplateError::Parse {
            line: line.max(1),
            column: col.max(1),
            message,
        },
        other => TemplateError::Parse {
            line: 1,
            column: 1,
            message: other.to_string(),
        },
    }
}

impl Program {
    pub fn parse(source: &str) -> Result<Program, TemplateError> {
        let (mut main, defines) = Parser::new(source, "{{", "}}")
            .and_then(Parser::parse)
            .map_err(from_gotmpl)?;
        structure::check(source).map_err(|(at, msg)| parse_error(source, at, msg))?;

        // Go's rules for definitions: two non-empty bodies of one name in one
        // text are an error; an empty body does not replace a non-empty one.
        let mut bodies: BTreeMap<String, ListNode> = BTreeMap::new();
        let mut non_empty: Vec<String> = Vec::new();
        for d in defines {
            let name = d.name.to_string();
            let empty = d.body.is_empty_tree();
            if empty && bodies.contains_key(&name) {
                continue;
            }
            if !empty {
                if non_empty.contains(&name) {
                    return Err(parse_error(
                        source,
                        d.pos.offset,
                        format!("multiple definition of template {}", go_quote(&name)),
                    ));
                }
                non_empty.push(name.clone());
            }
            bodies.insert(name, d.body);
        }
        if main.is_empty_tree() {
            if let Some(body) = bodies.get(TEMPLATE_NAME) {
                main = body.clone();
            }
        } else if non_empty.iter().any(|n| n == TEMPLATE_NAME) {
            return Err(parse_error(
                source,
                0,
                format!(
                    "multiple definition of template {}",
                    go_quote(TEMPLATE_NAME)
                ),
            ));
        }
        bodies
            .entry(TEMPLATE_NAME.to_string())
            .or_insert_with(|| main.clone());

        // What Go's parser checks besides the grammar.
        let mut checker = Checker {
            vars: vec!["$".into()],
        };
        checker
            .list(&main)
            .map_err(|(at, msg)| parse_error(source, at, msg))?;
        for body in bodies.values() {
            let mut checker = Checker {
                vars: vec!["$".into()],
            };
            checker
                .list(body)
                .map_err(|(at, msg)| parse_error(source, at, msg))?;
        }
        Ok(Program {
            source: source.to_string(),
            main,
            defines: bodies,
        })
    }

    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        let mut exec = Exec {
            prog: self,
            out: String::new(),
            vars: vec![("$".into(), data.clone())],
            depth: 0,
            steps: 0,
            at: None,
        };
        match exec.walk_list(data, &self.main) {
            Ok(()) => Ok(exec.out),
            Err(flow) => {
                let failure = match flow {
                    Flow::Fail(f) => *f,
                    // The structure check keeps break and continue in ranges.
                    Flow::Break | Flow::Continue => Failure {
                        offset: 0,
                        context: String::new(),
                        message: "break or continue outside range".into(),
                    },
                };
                let (line, column) = line_col(&self.source, failure.offset);
                Err(TemplateError::Execute {
                    line,
                    column,
                    context: failure.context,
                    message: failure.message,
                })
            }
        }
    }
}

/// Go's parse-time checks: functions exist, variables are declared before
/// use (in scope until the `{{end}}` of the enclosing control), and only the
/// first command of a pipeline may be a plain value.
struct Checker {
    vars: Vec<String>,
}

type CheckResult = Result<(), (usize, String)>;

impl Checker {
    fn list(&mut self, list: &ListNode) -> CheckResult {
        list.nodes.iter().try_for_each(|n| self.node(n))
    }

    fn node(&mut self, node: &Node) -> CheckResult {
        match node {
            Node::Action(a) => self.pipe(&a.pipe),
            Node::If(b) | Node::With(b) | Node::Range(b) => {
                let mark = self.vars.len();
                self.pipe(&b.pipe)?;
                self.list(&b.body)?;
                if let Some(e) = &b.else_body {
                    self.list(e)?;
                }
                self.vars.truncate(mark);
                Ok(())
            }
            Node::Template(t) => t.pipe.as_ref().map_or(Ok(()), |p| self.pipe(p)),
            Node::List(l) => self.list(l),
            Node::Text(_) | Node::Define(_) | Node::Break(_) | Node::Continue(_) => Ok(()),
        }
    }

    fn pipe(&mut self, pipe: &PipeNode) -> CheckResult {
        for d in &pipe.decl {
            self.vars.push(d.to_string());
        }
        for (i, cmd) in pipe.commands.iter().enumerate() {
            if i > 0
                && let Some(first) = cmd.args.first()
                && matches!(
                    first,
                    Expr::Bool(..)
                        | Expr::Dot(_)
                        | Expr::Nil(_)
                        | Expr::Number(..)
                        | Expr::String(..)
                )
            {
                return Err((
                    first.pos().offset,
                    format!("non executable command in pipeline stage {}", i + 1),
                ));
            }
            for arg in &cmd.args {
                self.expr(arg)?;
            }
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> CheckResult {
        match e {
            Expr::Variable(pos, name, _) => {
                if self.vars.iter().any(|v| v == name.as_str()) {
                    Ok(())
                } else {
                    Err((pos.offset, format!("undefined variable {}", go_quote(name))))
                }
            }
            Expr::Identifier(pos, name) => {
                if funcs::lookup(name).is_some() {
                    Ok(())
                } else {
                    Err((
                        pos.offset,
                        format!("function {} not defined", go_quote(name)),
                    ))
                }
            }
            Expr::Pipe(_, p) => self.pipe(p),
            Expr::Chain(_, inner, _) => self.expr(inner),
            _ => Ok(()),
        }
    }
}

/// How Go shows a node in an error (`n.String()`, cut at 20 characters).
fn expr_text(e: &Expr) -> String {
    match e {
        Expr::Dot(_) => ".".into(),
        Expr::Field(_, ids) => ids.iter().map(|i| format!(".{i}")).collect(),
        Expr::Variable(_, name, ids) => {
            let mut s = name.to_string();
            for i in ids {
                s.push('.');
                s.push_str(i);
            }
            s
        }
        Expr::Identifier(_, name) => name.to_string(),
        Expr::String(_, s) => go_quote(s),
        Expr::Number(_, Number::Int(i)) => i.to_string(),
        Expr::Number(_, Number::Uint(u)) => u.to_string(),
        Expr::Number(_, Number::Float(f)) => format_float(*f),
        Expr::Bool(_, b) => b.to_string(),
        Expr::Nil(_) => "nil".into(),
        Expr::Pipe(_, p) => format!("({})", pipe_text(p)),
        Expr::Chain(_, inner, ids) => {
            let mut s = expr_text(inner);
            for i in ids {
                s.push('.');
                s.push_str(i);
            }
            s
        }
    }
}

fn command_text(c: &CommandNode) -> String {
    c.args.iter().map(expr_text).collect::<Vec<_>>().join(" ")
}

fn pipe_text(p: &PipeNode) -> String {
    let mut s = String::new();
    if !p.decl.is_empty() {
        let names: Vec<&str> = p.decl.iter().map(|d| d.as_str()).collect();
        s.push_str(&names.join(", "));
        s.push_str(if p.is_assign { " = " } else { " := " });
    }
    let cmds: Vec<String> = p.commands.iter().map(command_text).collect();
    s.push_str(&cmds.join(" | "));
    s
}

fn cut(context: String) -> String {
    if context.chars().count() > 20 {
        format!("{}...", context.chars().take(20).collect::<String>())
    } else {
        context
    }
}

/// The node being evaluated, for errors.
#[derive(Clone, Copy)]
enum At<'p> {
    Expr(&'p Expr),
    Command(&'p CommandNode),
    Pipe(&'p PipeNode),
    Keyword(Pos, &'static str),
}

impl At<'_> {
    fn offset(&self) -> usize {
        match self {
            At::Expr(e) => e.pos().offset,
            At::Command(c) => c.pos.offset,
            At::Pipe(p) => p.pos.offset,
            At::Keyword(pos, _) => pos.offset,
        }
    }

    fn text(&self) -> String {
        match self {
            At::Expr(e) => expr_text(e),
            At::Command(c) => command_text(c),
            At::Pipe(p) => pipe_text(p),
            At::Keyword(_, k) => (*k).to_string(),
        }
    }
}

#[derive(Debug)]
struct Failure {
    offset: usize,
    context: String,
    message: String,
}

/// Why a walk stopped early.
enum Flow {
    Break,
    Continue,
    Fail(Box<Failure>),
}

type R<T> = Result<T, Flow>;

struct Exec<'p> {
    prog: &'p Program,
    out: String,
    vars: Vec<(String, Value)>,
    depth: usize,
    steps: u64,
    at: Option<At<'p>>,
}

impl<'p> Exec<'p> {
    fn at(&mut self, at: At<'p>) {
        self.at = Some(at);
    }

    fn fail<T>(&self, message: impl Into<String>) -> R<T> {
        let (offset, context) = self
            .at
            .map_or((0, String::new()), |a| (a.offset(), cut(a.text())));
        Err(Flow::Fail(Box::new(Failure {
            offset,
            context,
            message: message.into(),
        })))
    }

    fn step(&mut self) -> R<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return self.fail(format!(
                "the template runs more than {MAX_STEPS} actions and iterations"
            ));
        }
        if self.out.len() > MAX_TEXT {
            return self.fail(format!(
                "the commit message is longer than {} MiB",
                MAX_TEXT >> 20
            ));
        }
        Ok(())
    }

    // Variables.

    fn var_value(&self, name: &str) -> R<Value> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => self.fail(format!("undefined variable: {name}")),
        }
    }

    fn set_var(&mut self, name: &str, value: Value) -> R<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = value;
                Ok(())
            }
            None => self.fail(format!("undefined variable: {name}")),
        }
    }

    /// Overwrites the n-th variable from the top (range variables).
    fn set_top_var(&mut self, n: usize, value: Value) {
        let len = self.vars.len();
        if let Some(slot) = len.checked_sub(n).and_then(|i| self.vars.get_mut(i)) {
            slot.1 = value;
        }
    }

    // Walking.

    fn walk_list(&mut self, dot: &Value, list: &'p ListNode) -> R<()> {
        list.nodes.iter().try_for_each(|n| self.walk(dot, n))
    }

    fn walk(&mut self, dot: &Value, node: &'p Node) -> R<()> {
        self.step()?;
        match node {
            Node::Text(t) => {
                self.out.push_str(&t.text);
                Ok(())
            }
            Node::Action(a) => {
                self.at(At::Pipe(&a.pipe));
                let v = self.eval_pipeline(dot, &a.pipe)?;
                if a.pipe.decl.is_empty() {
                    self.print_value(&v);
                }
                Ok(())
            }
            Node::If(b) => self.walk_if_or_with(false, dot, b),
            Node::With(b) => self.walk_if_or_with(true, dot, b),
            Node::Range(b) => self.walk_range(dot, b),
            Node::Template(t) => self.walk_template(dot, t),
            Node::List(l) => self.walk_list(dot, l),
            Node::Define(_) => Ok(()),
            Node::Break(_) => Err(Flow::Break),
            Node::Continue(_) => Err(Flow::Continue),
        }
    }

    /// What an action prints: `fmt.Fprint` of the value; a missing value
    /// prints `<no value>`.
    fn print_value(&mut self, v: &Value) {
        match v {
            Value::Nil => self.out.push_str("<no value>"),
            other => write_value(&mut self.out, other),
        }
    }

    fn walk_if_or_with(&mut self, with: bool, dot: &Value, b: &'p BranchNode) -> R<()> {
        let mark = self.vars.len();
        let result = (|| {
            let val = self.eval_pipeline(dot, &b.pipe)?;
            if val.is_true() {
                self.walk_list(if with { &val } else { dot }, &b.body)
            } else if let Some(e) = &b.else_body {
                self.walk_list(dot, e)
            } else {
                Ok(())
            }
        })();
        self.vars.truncate(mark);
        result
    }

    fn walk_range(&mut self, dot: &Value, b: &'p BranchNode) -> R<()> {
        let outer = self.vars.len();
        let result = self.walk_range_inner(dot, b);
        self.vars.truncate(outer);
        result
    }

    fn walk_range_inner(&mut self, dot: &Value, b: &'p BranchNode) -> R<()> {
        self.at(At::Keyword(b.pos, "range"));
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let mark = self.vars.len();
        let items: Vec<(Value, Value)> = match &val {
            Value::List(l) => l
                .items
                .iter()
                .enumerate()
                .map(|(i, v)| (Value::Int(i64::try_from(i).unwrap_or(i64::MAX)), v.clone()))
                .collect(),
            Value::Map(m) => m.entries.clone(),
            // Go 1.22: ranging over an integer counts from 0.
            Value::Int(n) => {
                if b.pipe.decl.len() > 1 {
                    return self.fail(format!(
                        "can't use {n} to iterate over more than one variable"
                    ));
                }
                (0..*n).map(|i| (Value::Int(i), Value::Int(i))).collect()
            }
            Value::Nil => Vec::new(),
            other => {
                let text = super::value::sprint_value(other);
                return self.fail(format!("range can't iterate over {text}"));
            }
        };
        if items.is_empty() {
            return match &b.else_body {
                Some(e) => self.walk_list(dot, e),
                None => Ok(()),
            };
        }
        let decl = &b.pipe.decl;
        for (index, elem) in items {
            self.step()?;
            if !decl.is_empty() {
                if b.pipe.is_assign {
                    if decl.len() > 1 {
                        self.set_var(&decl[0], index.clone())?;
                    } else {
                        self.set_var(&decl[0], elem.clone())?;
                    }
                } else {
                    self.set_top_var(1, elem.clone());
                }
            }
            if decl.len() > 1 {
                if b.pipe.is_assign {
                    self.set_var(&decl[1], elem.clone())?;
                } else {
                    self.set_top_var(2, index);
                }
            }
            let r = self.walk_list(&elem, &b.body);
            self.vars.truncate(mark);
            match r {
                Ok(()) | Err(Flow::Continue) => {}
                Err(Flow::Break) => break,
                Err(fail) => return Err(fail),
            }
        }
        Ok(())
    }

    fn walk_template(&mut self, dot: &Value, t: &'p TemplateNode) -> R<()> {
        self.at(At::Keyword(t.pos, "template"));
        let Some(body) = self.prog.defines.get(t.name.as_str()) else {
            return self.fail(format!("template {} not defined", go_quote(&t.name)));
        };
        if self.depth >= MAX_DEPTH {
            return self.fail(format!("exceeded maximum template depth ({MAX_DEPTH})"));
        }
        // Without a pipeline the template gets nil, as in Go.
        let new_dot = match &t.pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => Value::Nil,
        };
        let saved = std::mem::replace(&mut self.vars, vec![("$".into(), new_dot.clone())]);
        self.depth += 1;
        let result = self.walk_list(&new_dot, body);
        self.depth -= 1;
        self.vars = saved;
        result
    }

    // Evaluation.

    fn eval_pipeline(&mut self, dot: &Value, pipe: &'p PipeNode) -> R<Value> {
        self.at(At::Pipe(pipe));
        let mut value: Option<Value> = None;
        for cmd in &pipe.commands {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        for name in &pipe.decl {
            if pipe.is_assign {
                self.set_var(name, value.clone())?;
            } else {
                self.vars.push((name.to_string(), value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, extra_args: usize, final_arg: &Option<Value>) -> R<()> {
        if extra_args > 0 || final_arg.is_some() {
            let text = self.at.map(|a| a.text()).unwrap_or_default();
            return self.fail(format!("can't give argument to non-function {text}"));
        }
        Ok(())
    }

    fn eval_command(
        &mut self,
        dot: &Value,
        cmd: &'p CommandNode,
        final_arg: Option<Value>,
    ) -> R<Value> {
        self.at(At::Command(cmd));
        let Some(first) = cmd.args.first() else {
            return self.fail("empty command");
        };
        let extra = cmd.args.len() - 1;
        match first {
            Expr::Field(_, ids) => {
                self.at(At::Expr(first));
                self.eval_field_chain(dot.clone(), ids, extra, final_arg)
            }
            Expr::Chain(_, inner, ids) => self.eval_chain(dot, first, inner, ids, extra, final_arg),
            Expr::Identifier(_, name) => {
                self.at(At::Command(cmd));
                self.eval_function(dot, name, &cmd.args[1..], final_arg)
            }
            Expr::Pipe(_, p) => {
                self.at(At::Expr(first));
                self.not_a_function(extra, &final_arg)?;
                self.eval_pipeline(dot, p)
            }
            Expr::Variable(_, name, ids) => self.eval_variable(first, name, ids, extra, final_arg),
            _ => {
                self.at(At::Expr(first));
                self.not_a_function(extra, &final_arg)?;
                match first {
                    Expr::Bool(_, b) => Ok(Value::Bool(*b)),
                    Expr::Dot(_) => Ok(dot.clone()),
                    Expr::Nil(_) => self.fail("nil is not a command"),
                    Expr::Number(_, n) => self.ideal_constant(*n),
                    Expr::String(_, s) => Ok(Value::str(s.as_ref())),
                    _ => self.fail("can't evaluate command"),
                }
            }
        }
    }

    fn ideal_constant(&self, n: Number) -> R<Value> {
        match n {
            Number::Int(i) => Ok(Value::Int(i)),
            Number::Float(f) => Ok(Value::Float(f)),
            Number::Uint(u) => self.fail(format!("{u} overflows int")),
        }
    }

    fn eval_chain(
        &mut self,
        dot: &Value,
        node: &'p Expr,
        inner: &'p Expr,
        ids: &[gotmpl::parse::SmolStr],
        extra: usize,
        final_arg: Option<Value>,
    ) -> R<Value> {
        self.at(At::Expr(node));
        if ids.is_empty() {
            return self.fail("internal error: no fields in evalChainNode");
        }
        if matches!(inner, Expr::Nil(_)) {
            return self.fail(format!(
                "indirection through explicit nil in {}",
                expr_text(node)
            ));
        }
        let receiver = self.eval_arg(dot, Param::Any, inner)?;
        self.at(At::Expr(node));
        self.eval_field_chain(receiver, ids, extra, final_arg)
    }

    fn eval_variable(
        &mut self,
        node: &'p Expr,
        name: &str,
        ids: &[gotmpl::parse::SmolStr],
        extra: usize,
        final_arg: Option<Value>,
    ) -> R<Value> {
        self.at(At::Expr(node));
        let value = self.var_value(name)?;
        if ids.is_empty() {
            self.not_a_function(extra, &final_arg)?;
            return Ok(value);
        }
        self.eval_field_chain(value, ids, extra, final_arg)
    }

    /// `.X.Y.Z`: only the last element gets the arguments.
    fn eval_field_chain(
        &mut self,
        mut receiver: Value,
        ids: &[gotmpl::parse::SmolStr],
        extra: usize,
        final_arg: Option<Value>,
    ) -> R<Value> {
        let Some((last, init)) = ids.split_last() else {
            return Ok(receiver);
        };
        for id in init {
            receiver = self.eval_field(id, 0, None, receiver)?;
        }
        self.eval_field(last, extra, final_arg, receiver)
    }

    fn eval_field(
        &mut self,
        name: &str,
        extra: usize,
        final_arg: Option<Value>,
        receiver: Value,
    ) -> R<Value> {
        if let Value::Nil = receiver {
            return Ok(Value::Nil);
        }
        let arguments = extra + usize::from(final_arg.is_some());
        if let Some(result) = receiver.method(name) {
            if arguments != 0 {
                return self.fail(format!(
                    "wrong number of args for {name}: want 0 got {arguments}"
                ));
            }
            return Ok(result);
        }
        let has_args = arguments > 0;
        match &receiver {
            Value::Struct(s) => {
                if let Some(v) = s.field(name) {
                    if has_args {
                        return self.fail(format!(
                            "{name} has arguments but cannot be invoked as function"
                        ));
                    }
                    return Ok(v);
                }
            }
            Value::Map(m) if m.key_ty == "string" => {
                if has_args {
                    return self.fail(format!("{name} is not a method but has arguments"));
                }
                let found = m.entries.iter().find(|(k, _)| match k {
                    Value::Str(k) => k.as_ref() == name,
                    _ => false,
                });
                return Ok(found.map_or(Value::Nil, |(_, v)| v.clone()));
            }
            _ => {}
        }
        self.fail(format!(
            "can't evaluate field {name} in type {}",
            receiver.type_name()
        ))
    }

    fn eval_function(
        &mut self,
        dot: &Value,
        name: &str,
        args: &'p [Expr],
        final_arg: Option<Value>,
    ) -> R<Value> {
        let Some(func) = funcs::lookup(name) else {
            return self.fail(format!("{} is not a defined function", go_quote(name)));
        };
        self.eval_call(dot, func, args, final_arg)
    }

    fn eval_call(
        &mut self,
        dot: &Value,
        func: &'static Func,
        args: &'p [Expr],
        final_arg: Option<Value>,
    ) -> R<Value> {
        let call_site = self.at;
        let name = func.name;
        let num_in = args.len() + usize::from(final_arg.is_some());
        let fixed = func.params.len();
        if func.variadic.is_some() {
            if num_in < fixed {
                return self.fail(format!(
                    "wrong number of args for {name}: want at least {fixed} got {}",
                    args.len()
                ));
            }
        } else if num_in != fixed {
            return self.fail(format!(
                "wrong number of args for {name}: want {fixed} got {num_in}"
            ));
        }
        let param = |i: usize| {
            func.params
                .get(i)
                .copied()
                .or(func.variadic)
                .unwrap_or(Param::Any)
        };

        // and/or evaluate their arguments only until one decides.
        if name == "and" || name == "or" {
            let mut v = Value::Nil;
            for arg in args {
                v = self.eval_arg(dot, Param::Value, arg)?;
                if v.is_true() == (name == "or") {
                    return Ok(v);
                }
            }
            if let Some(f) = final_arg {
                v = f;
            }
            return Ok(v);
        }

        let mut argv = Vec::with_capacity(num_in);
        for (i, arg) in args.iter().enumerate() {
            argv.push(self.eval_arg(dot, param(i), arg)?);
        }
        if let Some(f) = final_arg {
            let p = if func.variadic.is_some() && num_in > fixed {
                func.variadic.unwrap_or(Param::Any)
            } else {
                param(num_in - 1)
            };
            if let Some(site) = call_site {
                self.at(site);
            }
            argv.push(self.validate_type(f, p)?);
        }
        match (func.imp)(&argv) {
            Ok(Value::Str(s)) if s.len() > MAX_TEXT => {
                if let Some(site) = call_site {
                    self.at(site);
                }
                self.fail(format!("{name} returned more than {} MiB", MAX_TEXT >> 20))
            }
            Ok(v) => Ok(v),
            Err(e) => {
                if let Some(site) = call_site {
                    self.at(site);
                }
                self.fail(format!("error calling {name}: {e}"))
            }
        }
    }

    /// Go's `validateType`: a value must suit the parameter.
    fn validate_type(&self, v: Value, p: Param) -> R<Value> {
        match (&v, p) {
            (Value::Nil, p) if p.can_be_nil() => Ok(Value::Nil),
            (Value::Nil, p) => self.fail(format!("invalid value; expected {}", p.go_name())),
            (_, Param::Any | Param::Value) => Ok(v),
            (Value::Str(_), Param::Str) | (Value::Int(_), Param::Int) => Ok(v),
            (other, p) => self.fail(format!(
                "wrong type for value; expected {}; got {}",
                p.go_name(),
                other.type_name()
            )),
        }
    }

    /// Go's `evalArg`: an argument evaluated for a parameter type.
    fn eval_arg(&mut self, dot: &Value, p: Param, arg: &'p Expr) -> R<Value> {
        self.at(At::Expr(arg));
        match arg {
            Expr::Dot(_) => self.validate_type(dot.clone(), p),
            Expr::Nil(_) => {
                if p.can_be_nil() {
                    Ok(Value::Nil)
                } else {
                    self.fail(format!("cannot assign nil to {}", p.go_name()))
                }
            }
            Expr::Field(_, ids) => {
                let v = self.eval_field_chain(dot.clone(), ids, 0, None)?;
                self.at(At::Expr(arg));
                self.validate_type(v, p)
            }
            Expr::Variable(_, name, ids) => {
                let v = self.eval_variable(arg, name, ids, 0, None)?;
                self.validate_type(v, p)
            }
            Expr::Pipe(_, pipe) => {
                let v = self.eval_pipeline(dot, pipe)?;
                self.at(At::Expr(arg));
                self.validate_type(v, p)
            }
            Expr::Identifier(_, name) => {
                let v = self.eval_function(dot, name, &[], None)?;
                self.at(At::Expr(arg));
                self.validate_type(v, p)
            }
            Expr::Chain(_, inner, ids) => {
                let v = self.eval_chain(dot, arg, inner, ids, 0, None)?;
                self.validate_type(v, p)
            }
            Expr::Bool(_, b) => match p {
                Param::Any | Param::Value => Ok(Value::Bool(*b)),
                _ => self.fail(format!("expected {}; found {b}", p.go_name())),
            },
            Expr::String(_, s) => match p {
                Param::Any | Param::Value | Param::Str => Ok(Value::str(s.as_ref())),
                Param::Int => self.fail(format!("expected integer; found {}", go_quote(s))),
            },
            Expr::Number(_, n) => match (p, *n) {
                (Param::Any | Param::Value, n) => self.ideal_constant(n),
                (Param::Int, Number::Int(i)) => Ok(Value::Int(i)),
                #[allow(clippy::cast_possible_truncation)]
                (Param::Int, Number::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
                    // 1e3 is an integer constant in Go.
                    Ok(Value::Int(f as i64))
                }
                (Param::Int, _) => self.fail(format!("expected integer; found {}", expr_text(arg))),
                (Param::Str, _) => self.fail(format!("expected string; found {}", expr_text(arg))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn positions_count_lines_and_characters() {
        let src = "ab\ncé{{ .X }}\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 3), (2, 1));
        // "é" is two bytes, one column.
        assert_eq!(line_col(src, 6), (2, 3));
        assert_eq!(line_col(src, 99), (3, 1));
    }
}
