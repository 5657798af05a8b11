//! Commit messages: Go `text/template` semantics over Flux's template data.
//!
//! Flux renders `spec.git.commit.messageTemplate` with Go's `text/template`
//! and sprig's hermetic functions, over a `TemplateData` value:
//!
//! | Expression | Go type in Flux | Prints as |
//! |---|---|---|
//! | `.AutomationObject` | `types.NamespacedName` (`.Namespace`, `.Name`) | `NAMESPACE/NAME` |
//! | `.Changed.FileChanges` | `map[string]ObjectChanges` (file -> object -> changes) | sorted `{"file":{...}}` |
//! | `.Changed.Objects` | `map[ObjectIdentifier]Changes`, across files | sorted `{... }` |
//! | `.Changed.Changes` | `[]Change`, without duplicates, sorted by setter, old, new | `[{OldValue:"a" NewValue:"b" Setter:"ns:p"}]` |
//! | a change | `Change` (`.OldValue`, `.NewValue`, `.Setter`) | `{a b ns:p}` |
//! | an object | `ObjectIdentifier` (`.APIVersion`, `.Kind`, `.Name`, `.Namespace`) | `{{{apps/v1 Deployment} {podinfo default}}}` |
//! | `.Values` | `map[string]string` (`messageTemplateValues`) | `map[k:v]` |
//! | `.Updated` (Flux before 1.2) | `.Files`, `.Objects`, `.Images` | images print as `name:tag` |
//!
//! Ranging over a map visits its keys in Go's order (`internal/fmtsort`):
//! strings byte-wise, objects field by field in declaration order, that is
//! apiVersion, kind, name, namespace.
//!
//! The engine: [`gotmpl`] parses (Go's grammar, with positions). Its
//! executor works on untyped maps, which cannot carry what Flux's data needs
//! (struct keys, `String()` methods, methods such as `.Changed.Changes`, the
//! error for a field a struct does not have), so this module executes the
//! parse tree itself with Go's rules over typed values, checks what Go checks
//! at parse time (nesting of `{{if}}`/`{{end}}`, undefined functions and
//! variables), and uses gotmpl's `printf` and escapers. Pure: data in, text
//! out.
//!
//! Where Flux leaves a choice, or imageauto goes further:
//! - `.Updated` is what Flux before 1.2 offered (Flux 1.2 refuses it): each
//!   image has `.Name` (go-containerregistry's fully qualified name, e.g.
//!   `index.docker.io/library/nginx:1.25`), `.Identifier`, `.Repository`,
//!   `.Registry`, `.Policy` (prints `ns/name`), and, new, `.NewTag` and
//!   `.OldTag`. Flux walked its maps in random order; here `.Updated.Images`
//!   lists each policy once, files in byte order, objects in `fmtsort` order.
//! - A change in a document without apiVersion and kind is listed under an
//!   empty object identifier (Flux drops it from the record).
//! - Go 1.22's `{{range N}}` and Go 1.23's `{{else with}}` work, as in the
//!   Go that builds Flux.
//! - Limits a runaway template meets: 200 nested `{{template}}` calls, a
//!   million actions and iterations, 4 MiB of text.
//! - `printf` gives a value with a `String()` method, or a struct, as its
//!   text, which is what Go prints for `%v` and `%s` (not for `%d` or `%x`).

use crate::reference::ImageRef;
use crate::setters::Change;
use serde::Serialize;
use std::collections::BTreeMap;

/// The commit message when the automation gives no template.
pub const DEFAULT_MESSAGE: &str = "Update from image update automation";

mod data;
mod exec;
mod funcs;
mod structure;
mod value;

#[cfg(test)]
mod tests;

/// A template that does not parse, or that fails on the data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Go's parser would refuse the template.
    #[error("messageTemplate line {line}, column {column}: {message}")]
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
    /// The template parses but executing it fails (a field the data does
    /// not have, a function given the wrong type, ...).
    #[error("messageTemplate line {line}, column {column}: at <{context}>: {message}")]
    Execute {
        line: usize,
        column: usize,
        /// The expression being evaluated, as written.
        context: String,
        message: String,
    },
}

impl TemplateError {
    /// The 1-based line of the template the error is about.
    pub fn line(&self) -> usize {
        match self {
            TemplateError::Parse { line, .. } | TemplateError::Execute { line, .. } => *line,
        }
    }
}

/// One change made in one file: the file's path (relative to the
/// automation's `update.path`, with `/` separators, as Flux reports it) and
/// what the setters report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub file: String,
    pub change: Change,
}

impl From<(String, Change)> for FileChange {
    fn from((file, change): (String, Change)) -> Self {
        FileChange { file, change }
    }
}

/// Everything a commit message can show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TemplateInput {
    /// The ImageUpdateAutomation's namespace and name.
    pub namespace: String,
    pub name: String,
    /// The changes in the order the setters made them (file by file, in
    /// document order). A change whose document has no apiVersion and kind
    /// is reported under an empty object identifier.
    pub changes: Vec<FileChange>,
    /// The latest image of each policy that took part, keyed `NAMESPACE:NAME`
    /// (for `.Updated`; a change whose policy is missing here shows in
    /// `.Changed` only).
    pub images: BTreeMap<String, ImageRef>,
    /// `spec.git.commit.messageTemplateValues`.
    pub values: BTreeMap<String, String>,
}

impl TemplateInput {
    /// An input from what the setters report per file.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        changes: impl IntoIterator<Item = (String, Change)>,
        images: BTreeMap<String, ImageRef>,
        values: BTreeMap<String, String>,
    ) -> Self {
        TemplateInput {
            namespace: namespace.into(),
            name: name.into(),
            changes: changes.into_iter().map(FileChange::from).collect(),
            images,
            values,
        }
    }
}

/// The name Flux gives the template (Go shows it in its error messages).
pub const TEMPLATE_NAME: &str = "commit message";

/// Renders a commit message. An empty template gives Flux's default message,
/// [`DEFAULT_MESSAGE`].
pub fn render(template: &str, input: &TemplateInput) -> Result<String, TemplateError> {
    if template.is_empty() {
        return Ok(DEFAULT_MESSAGE.to_string());
    }
    let program = exec::Program::parse(template)?;
    let data = data::template_data(input);
    program.execute(&data)
}

/// Checks that a template parses as Go would parse it (syntax, nesting,
/// defined functions and variables), without data.
pub fn check(template: &str) -> Result<(), TemplateError> {
    if template.is_empty() {
        return Ok(());
    }
    exec::Program::parse(template).map(|_| ())
}

/// The functions a template may call: Go's builtins and sprig's string
/// functions.
pub fn functions() -> impl Iterator<Item = &'static str> {
    funcs::names()
}
