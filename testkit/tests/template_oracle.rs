#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Differential test of commit message templates against Go's own
//! text/template (Debian's golang-go), over Go types shaped like Flux's
//! template data, built from tests/oracles/template. Every template runs on
//! every input; outputs must be byte-identical, and a template that fails
//! in Go must fail here (at the same line, when executing).
//!
//! Left out, because Go 1.19 (the oracle) predates them and Flux's newer Go
//! has them: ranging over an integer and `{{else with}}` (both covered by
//! the unit tests).

use automation::api::{ImageRef, Object, load_str};
use automation::setters::{Change, ObjectId};
use automation::template::{TemplateError, TemplateInput, render};
use imageauto_tests::{go_oracle, repo_dir};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

fn object(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<ObjectId> {
    Some(ObjectId {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    })
}

fn change(
    file: &str,
    line: usize,
    object: Option<ObjectId>,
    old: &str,
    new: &str,
    setter: &str,
) -> (String, Change) {
    let policy = setter.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
    (
        file.to_string(),
        Change {
            line,
            column: 14,
            object,
            old_value: old.into(),
            new_value: new.into(),
            setter: setter.into(),
            policy,
        },
    )
}

fn image(name: &str, tag: &str, digest: Option<&str>) -> ImageRef {
    ImageRef {
        name: name.into(),
        tag: tag.into(),
        digest: digest.map(str::to_string),
    }
}

const REDIS_DIGEST: &str =
    "sha256:6745aaad46d795c9836632e1fb62f24b7e7f4c843144da8e47a5465c411a14be";

/// A fleet repository: several files, objects of several kinds and
/// namespaces, the same change in two objects, a kustomization without
/// metadata, a document without apiVersion and kind, values.
fn fleet() -> TemplateInput {
    let deploy = object("apps/v1", "Deployment", Some("podinfo"), "podinfo");
    let kustomization = object("kustomize.config.k8s.io/v1beta1", "Kustomization", None, "");
    let redis = object("apps/v1", "StatefulSet", Some("cache"), "redis");
    let backup = object("batch/v1", "CronJob", Some("cache"), "backup");
    let frontend = object("apps/v1", "Deployment", Some("default"), "frontend");
    let changes = vec![
        change(
            "apps/podinfo/deployment.yaml",
            21,
            deploy.clone(),
            "ghcr.io/stefanprodan/podinfo:6.3.0",
            "ghcr.io/stefanprodan/podinfo:6.5.4",
            "flux-system:podinfo",
        ),
        change(
            "apps/podinfo/deployment.yaml",
            30,
            deploy,
            "1.25.0",
            "1.25.3",
            "flux-system:nginx:tag",
        ),
        change(
            "apps/podinfo/kustomization.yaml",
            9,
            kustomization,
            "6.3.0",
            "6.5.4",
            "flux-system:podinfo:tag",
        ),
        change(
            "infra/redis.yaml",
            18,
            redis,
            "docker.io/library/redis:7.0.11",
            &format!("docker.io/library/redis:7.2.4@{REDIS_DIGEST}"),
            "flux-system:redis",
        ),
        change(
            "infra/redis.yaml",
            52,
            backup,
            "docker.io/library/redis:7.0.11",
            &format!("docker.io/library/redis:7.2.4@{REDIS_DIGEST}"),
            "flux-system:redis",
        ),
        change(
            "apps/frontend.yaml",
            12,
            frontend.clone(),
            "registry.example.com/mirror/nginx",
            "nginx",
            "flux-system:nginx:name",
        ),
        change(
            "apps/frontend.yaml",
            13,
            frontend,
            "1.25.0",
            "1.25.3",
            "flux-system:nginx:tag",
        ),
        change(
            "legacy/values.yaml",
            3,
            None,
            "6.3.0",
            "6.5.4",
            "flux-system:podinfo:tag",
        ),
    ];
    let images = BTreeMap::from([
        (
            "flux-system:podinfo".to_string(),
            image("ghcr.io/stefanprodan/podinfo", "6.5.4", None),
        ),
        (
            "flux-system:nginx".to_string(),
            image("nginx", "1.25.3", None),
        ),
        (
            "flux-system:redis".to_string(),
            image("docker.io/library/redis", "7.2.4", Some(REDIS_DIGEST)),
        ),
    ]);
    let values = BTreeMap::from([
        ("env".to_string(), "production".to_string()),
        ("team".to_string(), "platform".to_string()),
        ("ticket".to_string(), "OPS-42".to_string()),
    ]);
    TemplateInput::new("flux-system", "fleet", changes, images, values)
}

/// The ECR example's dev automation: one app, a Deployment and a
/// HelmRelease, a file name that needs quoting, no values.
fn dev() -> TemplateInput {
    let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/api";
    let changes = vec![
        change(
            "dev/api.yaml",
            20,
            object("apps/v1", "Deployment", Some("apps"), "api"),
            &format!("{ecr}:branch-dev-1700000000-abc1234"),
            &format!("{ecr}:branch-dev-1700003600-def5678"),
            "apps:api-dev",
        ),
        change(
            "dev/ünïcode \"release\".yaml",
            11,
            object(
                "helm.toolkit.fluxcd.io/v2",
                "HelmRelease",
                Some("apps"),
                "api-chart",
            ),
            "branch-dev-1700000000-abc1234",
            "branch-dev-1700003600-def5678",
            "apps:api-dev:tag",
        ),
    ];
    let images = BTreeMap::from([(
        "apps:api-dev".to_string(),
        image(ecr, "branch-dev-1700003600-def5678", None),
    )]);
    TemplateInput::new("apps", "dev", changes, images, BTreeMap::new())
}

/// Nothing changed (Flux does not commit then, but templates still run).
fn quiet() -> TemplateInput {
    let values = BTreeMap::from([("cluster".to_string(), "staging".to_string())]);
    TemplateInput::new("default", "quiet", Vec::new(), BTreeMap::new(), values)
}

/// The message templates of the examples shipped in examples/.
fn example_templates() -> Vec<(String, String)> {
    let dir = repo_dir().join("examples");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for example in entries {
        let file = example.join("image-automation.yaml");
        if !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let loaded = load_str(&file.display().to_string(), &text);
        for l in loaded.objects {
            if let Object::Automation(a) = l.object
                && let Some(t) = a.spec.git.and_then(|g| g.commit.message_template)
            {
                out.push((file.display().to_string(), t));
            }
        }
    }
    out
}

/// Templates from Flux's documentation (v1 and v1beta1), its tests, and
/// what users write.
const DOCUMENTED: &[&str] = &[
    // docs/spec/v1: the default example.
    "Automated image update\n\nAutomation name: {{ .AutomationObject }}\n\nFiles:\n{{ range $filename, $_ := .Changed.FileChanges -}}\n- {{ $filename }}\n{{ end -}}\n\nObjects:\n{{ range $resource, $changes := .Changed.Objects -}}\n- {{ $resource.Kind }} {{ $resource.Name }}\n  Changes:\n{{- range $_, $change := $changes }}\n    - {{ $change.OldValue }} -> {{ $change.NewValue }}\n{{ end -}}\n{{ end -}}\n",
    // docs/spec/v1: with functions.
    "Automated image update\n\nAutomation name: {{ .AutomationObject }}\n\nFiles:\n{{ range $filename, $_ := .Changed.FileChanges -}}\n- {{ $filename }}\n{{ end -}}\n\nObjects:\n{{ range $resource, $changes := .Changed.Objects -}}\n- {{ $resource.Kind | lower }} {{ $resource.Name | lower }}\n  Changes:\n{{- range $_, $change := $changes }}\n  {{ if contains \"5.0.3\" $change.NewValue -}}\n    - {{ $change.OldValue }} -> {{ $change.NewValue }}\n  {{ else -}}\n    [skip ci] wrong image\n  {{ end -}}\n{{ end -}}\n{{ end -}}\n",
    // docs/spec/v1: values.
    "Automated image update by Flux for cluster {{ .Values.cluster }}.",
    // docs/spec/v1beta1 and Flux 0.7's release notes.
    "Automated image update\n\nAutomation name: {{ .AutomationObject }}\n\nFiles:\n{{ range $filename, $_ := .Updated.Files -}}\n- {{ $filename }}\n{{ end -}}\n\nObjects:\n{{ range $resource, $_ := .Updated.Objects -}}\n- {{ $resource.Kind }} {{ $resource.Name }}\n{{ end -}}\n\nImages:\n{{ range .Updated.Images -}}\n- {{.}}\n{{ end -}}\n",
    // The controller's own test of the message.
    "Commit summary\n\nAutomation: {{ .AutomationObject }}\n\nFiles:\n{{ range $filename, $_ := .Updated.Files -}}\n- {{ $filename }}\n{{ end -}}\n\nObjects:\n{{ range $resource, $_ := .Updated.Objects -}}\n- {{ $resource.Kind }} {{ $resource.Name }}\n{{ end -}}\n\nImages:\n{{ range .Updated.Images -}}\n- {{.}} ({{.Policy.Name}})\n{{ end -}}\n",
    // `flux create image update`'s default.
    "{{range .Updated.Images}}{{println .}}{{end}}",
    // Exported from a cluster with CRLF line ends.
    "Automated image update\r\n\r\nAutomation name: {{ .AutomationObject\n}}\r\n\r\nFiles:\r\n{{ range $filename, $_ := .Updated.Files -}}\r\n- {{ $filename\n}}\r\n{{ end -}}\r\n\r\nObjects:\r\n{{ range $resource, $_ := .Updated.Objects\n-}}\r\n- {{ $resource.Kind }} {{ $resource.Name }}\r\n{{ end -}}\r\n\r\nImages:\r\n{{\nrange .Updated.Images -}}\r\n- {{.}}\r\n{{ end -}}    ",
    // A conventional commit.
    "chore(images): update {{ len .Changed.Changes }} image reference(s){{ with .Values.ticket }} [{{ . }}]{{ end }}\n\n{{ range .Changed.Changes -}}\n* {{ .Setter }}: {{ .OldValue }} -> {{ .NewValue }}\n{{ end -}}\n",
];

/// Constructs, data shapes and functions.
const CONSTRUCTS: &[&str] = &[
    "plain text, no actions\n",
    "{{ .AutomationObject }}",
    "{{ .AutomationObject.Namespace }}/{{ .AutomationObject.Name }}",
    "{{ .AutomationObject.String }}|{{ .Changed.Changes.String }}",
    "{{ printf \"%s in %q\" .AutomationObject .AutomationObject.Namespace }}",
    "{{ .Values }}|{{ .Values.env }}|{{ .Values.missing }}|{{ index .Values \"team\" }}|{{ index .Values \"nope\" }}|",
    "{{ range $k, $v := .Values }}{{ $k }}={{ $v }};{{ else }}no values{{ end }}",
    "{{ range .Changed.Changes }}{{ .Setter }}: {{ .OldValue }} -> {{ .NewValue }}\n{{ end }}",
    "{{ .Changed.Changes }}",
    "{{ .Changed.Objects }}",
    "{{ .Changed.FileChanges }}",
    "{{ .Changed }}",
    "{{ range $file, $objects := .Changed.FileChanges }}{{ $file }}:\n{{ range $obj, $changes := $objects }}  {{ $obj }} {{ len $changes }}\n{{ range $changes }}    {{ . }}\n{{ end }}{{ end }}{{ end }}",
    "{{ range $resource, $changes := .Changed.Objects }}{{ $resource.APIVersion }} {{ $resource.Kind }} {{ $resource.Namespace }}/{{ $resource.Name }}: {{ $changes }}\n{{ end }}",
    "{{ range $r, $_ := .Changed.Objects }}{{ $r.ResourceIdentifier.TypeMeta.Kind }} {{ $r.ResourceIdentifier.NameMeta }} {{ $r.TypeMeta }} {{ $r }}\n{{ end }}",
    "{{ range $r, $c := .Changed.Objects }}{{ range $i, $x := $c }}{{ $i }}={{ $x.Setter }} {{ end }}{{ end }}",
    "{{ with .Changed.Changes }}{{ len . }} changes{{ else }}nothing{{ end }}",
    "{{ if .Changed.Changes }}changed{{ else if .Values }}values only{{ else }}nothing at all{{ end }}",
    "{{ $n := len .Changed.Changes }}{{ if gt $n 4 }}many ({{ $n }}){{ else if eq $n 0 }}none{{ else }}few{{ end }}",
    "{{ range $i, $c := .Changed.Changes }}{{ if $i }}, {{ end }}{{ $i }}:{{ $c.NewValue }}{{ end }}",
    "{{ range .Changed.Changes }}{{ if hasSuffix \":tag\" .Setter }}{{ continue }}{{ end }}{{ .NewValue }} {{ end }}",
    "{{ range $i, $c := .Changed.Changes }}{{ if eq $i 2 }}{{ break }}{{ end }}{{ $c.Setter }};{{ end }}",
    "{{- range .Changed.Changes -}}\n  - {{ .NewValue | trimPrefix \"ghcr.io/\" | upper }}\n{{- end }}",
    "{{ \"  padded \\t\" | trim }}|{{ trimSuffix \".yaml\" \"deploy.yaml\" }}|{{ lower \"MiXeD\" }}|{{ upper \"ünï\" }}|{{ replace \"-\" \"_\" \"a-b-c\" }}|{{ replace \"\" \"+\" \"ab\" }}",
    "{{ join \", \" .Updated.Images }}|{{ join \"/\" \"single\" }}|{{ join \",\" .Changed.Changes }}|{{ join \"-\" nil }}|",
    "{{ default \"fallback\" .Values.missing }}|{{ default \"fallback\" .Values.env }}|{{ .Values.missing | default \"piped\" }}|{{ default \"d\" \"\" }}|{{ default \"d\" 0 }}|{{ default \"d\" }}|{{ default \"d\" .AutomationObject }}",
    "{{ quote .AutomationObject \"a\\\"b\" 3 nil }}|{{ quote }}|{{ .Values.team | quote }}",
    "{{ range .Changed.Changes }}{{ .NewValue | indent 4 }}{{ .Setter | nindent 2 }}{{ end }}",
    "{{ \"a\\nb\" | indent 3 }}|{{ nindent 0 \"x\" }}",
    "{{ range .Changed.Changes }}{{ if contains \"podinfo\" .NewValue }}{{ .NewValue }} {{ end }}{{ if hasPrefix \"docker.io\" .OldValue }}hub {{ end }}{{ end }}",
    "{{ printf \"%d changes, %5.2f%%, %x, %q, %v, %-8s|%08.3f|%+d\" (len .Changed.Changes) 12.5 255 .AutomationObject.Name .Values \"left\" 3.14159 7 }}",
    "{{ printf \"%v %s\" .Changed.Changes .AutomationObject }}|{{ printf \"%v\" .Values.missing }}|{{ printf \"%s\" }}|{{ printf \"%d\" \"x\" }}",
    "{{ print 1 2 \"a\" \"b\" 3 .AutomationObject }}|{{ println \"x\" 1 }}|{{ print }}|{{ print .Values.missing }}",
    "{{ html \"<a href='x'>&\\\"</a>\" }}|{{ js \"it's <b>\\\"q\\\"</b> = \\n\" }}|{{ urlquery \"a b&c=d/é\" }}|{{ html .Values.missing }}|{{ urlquery 1 \"x\" 2 }}",
    "{{ len .AutomationObject.Name }} {{ len .Values }} {{ len .Changed.FileChanges }} {{ index .AutomationObject.Name 0 }} {{ slice .AutomationObject.Name 1 3 }} {{ slice .AutomationObject.Name 2 }}",
    "{{ slice .Changed.Changes 1 }}|{{ slice .Changed.Changes 0 1 }}",
    "{{ and .Values.env .Changed.Changes }}|{{ or .Values.missing \"x\" }}|{{ and 0 (index .Values \"x\" | len) }}|{{ not .Values }}|{{ or 0 \"\" }}|{{ and 1 2 }}",
    "{{ eq .AutomationObject.Namespace \"flux-system\" \"apps\" }} {{ ne 1 2 }} {{ lt \"a\" \"b\" }} {{ le 2 2 }} {{ ge 1.5 2.5 }} {{ eq .Values.missing \"x\" }} {{ gt \"b\" \"a\" }}",
    "{{ range $r, $c := .Changed.Objects }}{{ eq $r $r }} {{ end }}",
    "{{ $first := \"\" }}{{ range $r, $_ := .Changed.Objects }}{{ if not $first }}{{ $first = $r.Name }}{{ end }}{{ end }}first={{ $first }}",
    "{{ define \"change\" }}- {{ .OldValue }} => {{ .NewValue }}\n{{ end }}{{ range .Changed.Changes }}{{ template \"change\" . }}{{ end }}{{ block \"footer\" .AutomationObject }}by {{ . }}{{ end }}",
    "{{ template \"x\" }}{{ define \"x\" }}[{{ . }}]{{ end }}",
    "{{ range .Updated.Images }}{{ .Name }} {{ .Identifier }} {{ .Repository }} {{ .Registry }} {{ .Policy }} {{ .Policy.Name }} {{ .NewTag }} {{ .OldTag }}\n{{ end }}",
    "{{ range $f, $r := .Updated.Files }}{{ $f }}: {{ range $o, $imgs := $r.Objects }}{{ $o.Kind }}={{ $imgs }} {{ end }}\n{{ end }}",
    "{{ range $o, $imgs := .Updated.Objects }}{{ $o.Name }} {{ len $imgs }} {{ index $imgs 0 }}\n{{ end }}",
    "{{ .Updated }}|{{ .Updated.Images }}|{{ .Updated.Objects }}",
    "{{ . }}",
    "a  {{- .AutomationObject.Name -}}  b\n{{- /* a comment */ -}}\n  c {{/* another */}}",
    "{{ 1e3 }} {{ 'a' }} {{ 0x1F }} {{ 1.5 }} {{ -7 }} {{ 0.000001 }} {{ 1e6 }} {{ 123456.0 }} {{ true }} {{ 017 }}",
    "{{ (index .Changed.Changes 0).Setter }}",
    "{{ with $c := index .Changed.Changes 0 }}{{ $c.NewValue }}{{ end }}",
    "{{ range .Changed.Changes }}{{ $.AutomationObject.Name }}:{{ .Setter }} {{ end }}",
    "{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $y := 3 }}{{ $y }}{{ end }}{{ $x }}",
    "{{ range $i, $c := .Changed.Changes }}{{ end }}{{ with .Values.team }}{{ . }}{{ else }}-{{ end }}",
    "{{ index .Changed.FileChanges \"infra/redis.yaml\" }}|{{ index .Changed.FileChanges \"none\" }}",
    "{{ range $r, $c := .Changed.Objects }}{{ index $.Changed.Objects $r }}{{ end }}",
];

/// Templates that fail, in Go's parser or when executing.
const FAILING: &[&str] = &[
    // Executing.
    "line one\n{{ .Nope }}",
    "{{ .AutomationObject.Nope }}",
    "{{ .Changed.Changes.Nope }}",
    "\n\n{{ upper .AutomationObject }}",
    "{{ .Values.missing | upper }}",
    "{{ index .Changed.Objects \"x\" }}",
    "{{ len 3 }}",
    "{{ .Changed.Changes 1 }}",
    "{{ nil }}",
    "{{ printf }}",
    "{{ template \"missing\" }}",
    "{{ 1 2 }}",
    "{{ indent \"x\" \"y\" }}",
    "{{ eq 1 \"a\" }}",
    "{{ lt true false }}",
    "{{ .AutomationObject.Name.Foo }}",
    "{{ eq .Changed.Changes .Changed.Changes }}",
    "{{ index .Changed.Changes 99 }}",
    "{{ .AutomationObject 1 }}",
    "{{ $x := 1 }}{{ $x.Foo }}",
    "{{ range .AutomationObject }}{{ end }}",
    "{{ trim 3 }}",
    "{{ indent -1 \"x\" }}",
    "{{ call .AutomationObject }}",
    // Parsing.
    "{{ .AutomationObject ",
    "{{ if .Values }}unclosed",
    "a{{ end }}b",
    "{{ else }}",
    "{{ toYaml . }}",
    "{{ $undefined }}",
    "{{ .Values | 3 }}",
    "{{ break }}",
    "{{ range .Changed.Changes }}{{ else }}{{ else }}{{ end }}",
    "{{ define \"a\" }}x{{ end }}{{ define \"a\" }}y{{ end }}",
    "{{ \"unterminated }}",
    "{{ (.Values }}",
    "{{ if }}{{ end }}",
    "{{ range $a, $b, $c := .Values }}{{ end }}",
    "{{ if .Values }}{{ define \"x\" }}{{ end }}{{ end }}",
];

fn ask_oracle(inputs: &[TemplateInput], templates: &[String]) -> Vec<serde_json::Value> {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let bin = go_oracle("template", &dir);
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("oracle starts");
    let doc = serde_json::json!({ "inputs": inputs, "templates": templates });
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(doc.to_string().as_bytes()));
    let out = child.wait_with_output().expect("oracle runs");
    writer.join().expect("writer").expect("write to oracle");
    assert!(out.status.success(), "the oracle failed");
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("oracle JSON");
    assert_eq!(results.len(), inputs.len() * templates.len());
    results
}

/// The line of Go's "template: commit message:LINE:COL: ..." message.
fn go_line(err: &str) -> Option<usize> {
    err.strip_prefix("template: commit message:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

#[test]
fn templates_agree_with_go() {
    let inputs = vec![fleet(), dev(), quiet()];
    let examples = example_templates();
    assert_eq!(examples.len(), 3, "one template per example: {examples:?}");
    let mut templates: Vec<String> = examples.iter().map(|(_, t)| t.clone()).collect();
    templates.extend(DOCUMENTED.iter().map(|t| t.to_string()));
    templates.extend(CONSTRUCTS.iter().map(|t| t.to_string()));
    let first_failing = templates.len();
    templates.extend(FAILING.iter().map(|t| t.to_string()));
    assert!(first_failing >= 40, "{first_failing} templates that render");

    let answers = ask_oracle(&inputs, &templates);
    let mut mismatches = Vec::new();
    let mut rendered = 0;
    let mut failed = 0;
    for (t, template) in templates.iter().enumerate() {
        for (i, input) in inputs.iter().enumerate() {
            let want = &answers[t * inputs.len() + i];
            let ours = render(template, input);
            let case = format!("template #{t} {template:?} on input #{i}");
            match (want["ok"].as_bool(), &ours) {
                (Some(true), Ok(got)) => {
                    rendered += 1;
                    let want = want["out"].as_str().unwrap_or("");
                    if got != want {
                        mismatches.push(format!("{case}:\n  go:   {want:?}\n  ours: {got:?}"));
                    }
                }
                (Some(false), Err(e)) => {
                    failed += 1;
                    let go_err = want["err"].as_str().unwrap_or("");
                    // Errors while executing name the same line.
                    if let TemplateError::Execute { line, .. } = e
                        && go_err.contains("executing")
                        && go_line(go_err) != Some(*line)
                    {
                        mismatches.push(format!(
                            "{case}: line {line}, Go says {go_err:?} (ours: {e})"
                        ));
                    }
                    if t < first_failing && i == 0 {
                        mismatches.push(format!("{case}: meant to render, both fail: {go_err}"));
                    }
                }
                (Some(true), Err(e)) => mismatches.push(format!(
                    "{case}: Go renders {:?}, ours fails: {e}",
                    want["out"].as_str().unwrap_or("")
                )),
                _ => mismatches.push(format!(
                    "{case}: Go fails ({}), ours renders {ours:?}",
                    want["err"].as_str().unwrap_or("?")
                )),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        answers.len(),
        mismatches.join("\n")
    );
    // Every failing template fails on every input; the others mostly render.
    assert!(failed >= FAILING.len() * inputs.len(), "{failed} failures");
    assert!(rendered > first_failing * 2, "only {rendered} renders");
}
