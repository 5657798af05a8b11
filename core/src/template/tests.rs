use super::*;
use crate::setters::ObjectId;

fn obj(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<ObjectId> {
    Some(ObjectId {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    })
}

fn chg(
    file: &str,
    object: Option<ObjectId>,
    old: &str,
    new: &str,
    setter: &str,
) -> (String, Change) {
    let policy = setter.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
    (
        file.to_string(),
        Change {
            line: 1,
            column: 1,
            object,
            old_value: old.into(),
            new_value: new.into(),
            setter: setter.into(),
            policy,
        },
    )
}

/// Two files; objects whose name order and namespace order disagree; the
/// same change in two objects; one object in two files.
fn input() -> TemplateInput {
    let web_b = obj("apps/v1", "Deployment", Some("a-ns"), "web-b");
    let web_a = obj("apps/v1", "Deployment", Some("z-ns"), "web-a");
    let changes = vec![
        chg(
            "b.yaml",
            web_b.clone(),
            "ghcr.io/x/web:1.0.0",
            "ghcr.io/x/web:1.1.0",
            "flux:web",
        ),
        chg("b.yaml", web_b, "7.0", "7.2", "flux:redis:tag"),
        chg(
            "a.yaml",
            web_a.clone(),
            "ghcr.io/x/web:1.0.0",
            "ghcr.io/x/web:1.1.0",
            "flux:web",
        ),
        chg("c.yaml", web_a, "1", "2", "flux:replicas:tag"),
    ];
    let images = BTreeMap::from([
        (
            "flux:web".to_string(),
            ImageRef {
                name: "ghcr.io/x/web".into(),
                tag: "1.1.0".into(),
                digest: None,
            },
        ),
        (
            "flux:redis".to_string(),
            ImageRef {
                name: "redis".into(),
                tag: "7.2".into(),
                digest: None,
            },
        ),
    ]);
    let values = BTreeMap::from([
        ("zone".to_string(), "eu".to_string()),
        ("env".to_string(), "prod".to_string()),
    ]);
    TemplateInput::new("flux", "apps", changes, images, values)
}

fn run(template: &str) -> String {
    render(template, &input()).unwrap_or_else(|e| panic!("{template:?}: {e}"))
}

fn fails(template: &str) -> TemplateError {
    render(template, &input()).expect_err(template)
}

#[test]
fn an_empty_template_gives_the_default_message() {
    assert_eq!(run(""), DEFAULT_MESSAGE);
    assert_eq!(DEFAULT_MESSAGE, "Update from image update automation");
    // Only the empty string: white space is a template like any other.
    assert_eq!(run(" \n"), " \n");
    assert_eq!(check(""), Ok(()));
}

#[test]
fn the_automation_prints_as_namespace_slash_name() {
    assert_eq!(
        run(
            "{{ .AutomationObject }} {{ .AutomationObject.Namespace }} {{ .AutomationObject.Name }}"
        ),
        "flux/apps flux apps"
    );
    assert_eq!(
        run("{{ printf \"%s|%v\" .AutomationObject .AutomationObject }}"),
        "flux/apps|flux/apps"
    );
}

#[test]
fn maps_range_in_go_order() {
    // Strings byte-wise.
    assert_eq!(
        run("{{ range $k, $v := .Values }}{{ $k }}={{ $v }} {{ end }}"),
        "env=prod zone=eu "
    );
    // Objects field by field: apiVersion, kind, name, then namespace; so
    // web-a (z-ns) before web-b (a-ns).
    assert_eq!(
        run("{{ range $o, $c := .Changed.Objects }}{{ $o.Name }}/{{ $o.Namespace }} {{ end }}"),
        "web-a/z-ns web-b/a-ns "
    );
    // The object prints as kyaml's nested struct.
    assert_eq!(
        run("{{ range $o, $_ := .Changed.Objects }}{{ $o }}|{{ end }}"),
        "{{{apps/v1 Deployment} {web-a z-ns}}}|{{{apps/v1 Deployment} {web-b a-ns}}}|"
    );
    // Files in byte order.
    assert_eq!(
        run("{{ range $f, $_ := .Changed.FileChanges }}{{ $f }} {{ end }}"),
        "a.yaml b.yaml c.yaml "
    );
}

#[test]
fn changes_are_unique_and_sorted_like_flux() {
    // Sorted by setter, then old, then new; the change made in two objects
    // appears once.
    assert_eq!(
        run("{{ range .Changed.Changes }}{{ .Setter }}:{{ .NewValue }} {{ end }}"),
        "flux:redis:tag:7.2 flux:replicas:tag:2 flux:web:ghcr.io/x/web:1.1.0 "
    );
    // An object's changes across files, sorted.
    assert_eq!(
        run(
            "{{ range $o, $c := .Changed.Objects }}{{ $o.Name }}={{ len $c }}{{ range $c }},{{ .Setter }}{{ end }} {{ end }}"
        ),
        "web-a=2,flux:replicas:tag,flux:web web-b=2,flux:redis:tag,flux:web "
    );
    // Within a file, in the order they were made.
    assert_eq!(
        run(
            "{{ range $o, $c := index .Changed.FileChanges \"b.yaml\" }}{{ range $c }}{{ .Setter }} {{ end }}{{ end }}"
        ),
        "flux:web flux:redis:tag "
    );
    // String(): quoted and sorted.
    assert_eq!(
        run("{{ index .Changed.FileChanges \"c.yaml\" }}"),
        "{{{{apps/v1 Deployment} {web-a z-ns}}}:[{OldValue:\"1\" NewValue:\"2\" Setter:\"flux:replicas:tag\"}]}"
    );
}

#[test]
fn updated_images_print_as_references() {
    assert_eq!(
        run("{{ range .Updated.Images }}{{ . }}|{{ end }}"),
        "ghcr.io/x/web:1.1.0|redis:7.2|"
    );
    assert_eq!(
        run(
            "{{ range .Updated.Images }}{{ .Name }} {{ .NewTag }} {{ .OldTag }} {{ .Policy }} {{ .Policy.Name }}|{{ end }}"
        ),
        "ghcr.io/x/web:1.1.0 1.1.0 1.0.0 flux/web web|index.docker.io/library/redis:7.2 7.2 7.0 flux/redis redis|"
    );
    assert_eq!(
        run(
            "{{ range .Updated.Images }}{{ .Identifier }} {{ .Repository }} {{ .Registry }}|{{ end }}"
        ),
        "1.1.0 x/web ghcr.io|7.2 library/redis index.docker.io|"
    );
    assert_eq!(
        run("{{ range $f, $_ := .Updated.Files }}{{ $f }} {{ end }}"),
        "a.yaml b.yaml "
    );
    assert_eq!(
        run("{{ range $o, $imgs := .Updated.Objects }}{{ $o.Name }}={{ $imgs }} {{ end }}"),
        "web-a=[ghcr.io/x/web:1.1.0] web-b=[ghcr.io/x/web:1.1.0 redis:7.2] "
    );
}

#[test]
fn control_structures() {
    assert_eq!(run("{{ if .Values.env }}yes{{ else }}no{{ end }}"), "yes");
    assert_eq!(
        run("{{ if .Values.nope }}a{{ else if .Values.zone }}b{{ else }}c{{ end }}"),
        "b"
    );
    assert_eq!(run("{{ with .Values.env }}[{{ . }}]{{ end }}"), "[prod]");
    assert_eq!(
        run("{{ with .Values.nope }}[{{ . }}]{{ else }}none{{ end }}"),
        "none"
    );
    // Go 1.23's `else with`.
    assert_eq!(
        run("{{ with .Values.nope }}a{{ else with .Values.zone }}{{ . }}{{ end }}"),
        "eu"
    );
    assert_eq!(
        run("{{ range .Values.nope }}x{{ else }}empty{{ end }}"),
        "empty"
    );
    assert_eq!(
        run(
            "{{ range $i, $c := .Changed.Changes }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ if eq $i 2 }}{{ break }}{{ end }}{{ $i }}{{ end }}"
        ),
        "0"
    );
    // Go 1.22's range over an integer.
    assert_eq!(
        run(
            "{{ range 3 }}{{ . }}{{ end }}|{{ range $i := 2 }}{{ $i }}{{ end }}|{{ range 0 }}x{{ else }}none{{ end }}"
        ),
        "012|01|none"
    );
    assert!(
        fails("{{ range $i, $e := 3 }}{{ end }}")
            .to_string()
            .contains("more than one variable")
    );
    assert_eq!(
        run(
            "{{ define \"img\" }}<{{ . }}>{{ end }}{{ range .Updated.Images }}{{ template \"img\" . }}{{ end }}{{ block \"tail\" $.AutomationObject.Name }} by {{ . }}{{ end }}"
        ),
        "<ghcr.io/x/web:1.1.0><redis:7.2> by apps"
    );
}

#[test]
fn variables_and_pipelines() {
    assert_eq!(
        run("{{ $n := len .Changed.Changes }}{{ $n }}{{ $n = 7 }} {{ $n }}"),
        "3 7"
    );
    assert_eq!(
        run("{{ range .Updated.Images }}{{ $.AutomationObject.Name }}{{ end }}"),
        "appsapps"
    );
    // The previous command's value is the last argument of the next one.
    assert_eq!(
        run("{{ .Values.env | printf \"%s-%s\" \"x\" | upper }}"),
        "X-PROD"
    );
    assert_eq!(
        run("{{ (index .Changed.Changes 0).Setter }}"),
        "flux:redis:tag"
    );
    // Variables end with their control structure.
    assert!(check("{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}").is_err());
}

#[test]
fn go_builtins() {
    assert_eq!(
        run(
            "{{ print \"a\" 1 2 \"b\" }}|{{ println 1 \"x\" }}|{{ printf \"%05.1f %q %x\" 3.14159 \"q\" 255 }}"
        ),
        "a1 2b|1 x\n|003.1 \"q\" ff"
    );
    assert_eq!(
        run(
            "{{ len .Values }} {{ index .Values \"zone\" }} {{ slice \"abcdef\" 1 3 }} {{ index \"A\" 0 }}"
        ),
        "2 eu bc 65"
    );
    assert_eq!(
        run("{{ not .Values.nope }} {{ and 1 0 }} {{ or 0 \"x\" }}"),
        "true 0 x"
    );
    // and/or stop at the deciding argument: .Nope is never evaluated.
    assert_eq!(
        run("{{ or true .Nope }}|{{ and false .Nope }}"),
        "true|false"
    );
    assert_eq!(
        run(
            "{{ eq 1 2 1 }} {{ ne \"a\" \"b\" }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt 1.5 2.5 }} {{ ge \"b\" \"a\" }}"
        ),
        "true true true true false true"
    );
    assert_eq!(
        run("{{ html \"<a&b>\" }} {{ js \"it's\" }} {{ urlquery \"a b/c\" }}"),
        "&lt;a&amp;b&gt; it\\'s a+b%2Fc"
    );
    assert!(
        fails("{{ call .AutomationObject }}")
            .to_string()
            .contains("non-function")
    );
}

#[test]
fn sprig_functions_take_the_value_last() {
    assert_eq!(
        run(
            "{{ trim \"  x \\n\" }}|{{ trimPrefix \"ghcr.io/\" \"ghcr.io/x\" }}|{{ trimSuffix \".yaml\" \"a.yaml\" }}"
        ),
        "x|x|a"
    );
    assert_eq!(
        run("{{ upper \"abc\" }}|{{ lower \"ABC\" }}|{{ replace \"o\" \"0\" \"foo\" }}"),
        "ABC|abc|f00"
    );
    assert_eq!(
        run("{{ join \", \" .Updated.Images }}|{{ join \"-\" \"one\" }}"),
        "ghcr.io/x/web:1.1.0, redis:7.2|one"
    );
    assert_eq!(
        run(
            "{{ default \"d\" .Values.nope }}|{{ .Values.env | default \"d\" }}|{{ default \"d\" \"\" }}"
        ),
        "d|prod|d"
    );
    assert_eq!(
        run("{{ quote \"a\\\"b\" .AutomationObject }}|{{ .Values.env | quote }}"),
        "\"a\\\"b\" \"flux/apps\"|\"prod\""
    );
    assert_eq!(
        run("{{ \"a\\nb\" | indent 2 }}|{{ \"a\" | nindent 3 }}"),
        "  a\n  b|\n   a"
    );
    assert_eq!(
        run(
            "{{ contains \"web\" \"ghcr.io/x/web\" }} {{ hasPrefix \"ghcr\" \"ghcr.io\" }} {{ hasSuffix \".io\" \"ghcr.io\" }} {{ contains \"x\" \"abc\" }}"
        ),
        "true true true false"
    );
    for f in [
        "trim",
        "trimPrefix",
        "trimSuffix",
        "upper",
        "lower",
        "replace",
        "join",
        "default",
        "quote",
        "indent",
        "nindent",
        "contains",
        "hasPrefix",
        "hasSuffix",
    ] {
        assert!(functions().any(|n| n == f), "{f}");
    }
    // Nothing that depends on time, randomness or the environment.
    for f in [
        "now",
        "date",
        "randAlpha",
        "env",
        "expandenv",
        "uuidv4",
        "getHostByName",
    ] {
        assert!(functions().all(|n| n != f), "{f}");
    }
}

#[test]
fn type_errors_like_go() {
    // A string parameter takes strings only, not a value with String().
    let e = fails("{{ upper .AutomationObject }}");
    assert!(
        e.to_string()
            .contains("expected string; got types.NamespacedName"),
        "{e}"
    );
    // A missing map entry cannot be a string argument.
    assert!(
        fails("{{ .Values.nope | upper }}")
            .to_string()
            .contains("invalid value; expected string")
    );
    // But it prints as <no value>, and is nil for interface{} parameters.
    assert_eq!(
        run("{{ .Values.nope }}|{{ printf \"%v\" .Values.nope }}"),
        "<no value>|<nil>"
    );
    assert!(
        fails("{{ eq 1 \"1\" }}")
            .to_string()
            .contains("incompatible types")
    );
    assert!(
        fails("{{ .Changed.Changes 1 }}")
            .to_string()
            .contains("want 0 got 1")
    );
}

#[test]
fn errors_name_the_line_and_column() {
    let e = fails("title\n\n  {{ .Nope }}");
    assert_eq!(e.line(), 3);
    assert_eq!(
        e.to_string(),
        "messageTemplate line 3, column 6: at <.Nope>: can't evaluate field Nope in type source.TemplateData"
    );
    let e = check("ok\n{{ if .X }}\nnever closed").expect_err("unclosed");
    assert_eq!(e.line(), 2);
    assert!(
        e.to_string()
            .starts_with("messageTemplate line 2, column 4: unexpected EOF"),
        "{e}"
    );
    let e = check("{{ .X }}\n{{ nope .X }}").expect_err("undefined function");
    assert_eq!(
        e.to_string(),
        "messageTemplate line 2, column 4: function \"nope\" not defined"
    );
    let e = check("{{ .X ").expect_err("unclosed action");
    assert!(matches!(e, TemplateError::Parse { line: 1, .. }), "{e:?}");
    // Stray {{end}}: gotmpl's parser alone would drop the rest.
    assert!(check("a{{ end }}b").is_err());
}

#[test]
fn check_parses_without_data() {
    for ok in [
        "{{ range $o, $c := .Changed.Objects }}{{ $o.Kind }}{{ end }}",
        "{{ .Whatever.Field }}",
        "{{ define \"x\" }}{{ . }}{{ end }}{{ template \"x\" . }}",
        "{{ $x := 1 }}{{ $x = 2 }}",
    ] {
        assert_eq!(check(ok), Ok(()), "{ok}");
    }
    for bad in [
        "{{ toYaml . }}",
        "{{ $y }}",
        "{{ break }}",
        "{{ else }}",
        "{{ .A | \"x\" }}",
        "{{ define \"a\" }}1{{ end }}{{ define \"a\" }}2{{ end }}",
    ] {
        assert!(check(bad).is_err(), "{bad}");
    }
}

#[test]
fn runaway_templates_stop() {
    let e = fails("{{ define \"r\" }}{{ template \"r\" . }}{{ end }}{{ template \"r\" . }}");
    assert!(e.to_string().contains("maximum template depth"), "{e}");
    let e = fails("{{ range 100000000 }}{{ end }}");
    assert!(e.to_string().contains("actions and iterations"), "{e}");
    // Text that would not fit in memory is refused before it is built.
    let e = fails("{{ indent 1000000000000 \"a\\nb\" }}");
    assert!(e.to_string().contains("more than 4 MiB"), "{e}");
    let e = fails(
        "{{ $a := \"0123456789abcdef\" }}{{ range 30 }}{{ $a = printf \"%s%s\" $a $a }}{{ end }}",
    );
    assert!(
        e.to_string().contains("printf returned more than 4 MiB"),
        "{e}"
    );
    let e = fails(
        "{{ $a := \"0123456789abcdef\" }}{{ range 20 }}{{ $a = replace \"\" $a $a }}{{ end }}",
    );
    assert!(e.to_string().contains("more than 4 MiB"), "{e}");
}

#[test]
fn an_input_from_the_setters() {
    // What the local loop passes: (file, change) pairs and the images.
    let input = TemplateInput::new(
        "ns",
        "auto",
        vec![chg("k.yaml", None, "1", "2", "ns:p:tag")],
        BTreeMap::new(),
        BTreeMap::new(),
    );
    assert_eq!(
        render(
            "{{ range $o, $c := .Changed.Objects }}[{{ $o.Kind }}]{{ $c }}{{ end }}|{{ .Updated.Images }}",
            &input
        ),
        Ok("[][{OldValue:\"1\" NewValue:\"2\" Setter:\"ns:p:tag\"}]|[]".to_string())
    );
}
