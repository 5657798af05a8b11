// Oracle for imageauto's commit message templates: Go's own text/template
// over Go types shaped like Flux's template data (image-automation-
// controller's source.TemplateData, update.Result with its String methods,
// kyaml's ResourceIdentifier, types.NamespacedName, and the update.Result
// of Flux before 1.2 as .Updated), with the sprig functions imageauto
// offers, written here with sprig's semantics (standard library only: no Go
// modules offline).
//
// Reads one JSON document from standard input:
//
//	{"inputs": [TemplateInput...], "templates": ["...", ...]}
//
// where a TemplateInput is imageauto's automation::template::TemplateInput
// serialised, and writes a JSON array with, for every template and then
// every input, {"ok": true, "out": "..."} or {"ok": false, "err": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"text/template"
)

// ---- The input, as imageauto serialises it.

type objectID struct {
	APIVersion string  `json:"apiVersion"`
	Kind       string  `json:"kind"`
	Namespace  *string `json:"namespace"`
	Name       string  `json:"name"`
}

type setterChange struct {
	Object   *objectID `json:"object"`
	OldValue string    `json:"oldValue"`
	NewValue string    `json:"newValue"`
	Setter   string    `json:"setter"`
	Policy   string    `json:"policy"`
}

type fileChange struct {
	File   string       `json:"file"`
	Change setterChange `json:"change"`
}

type image struct {
	Name   string  `json:"name"`
	Tag    string  `json:"tag"`
	Digest *string `json:"digest"`
}

type input struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Changes   []fileChange      `json:"changes"`
	Images    map[string]image  `json:"images"`
	Values    map[string]string `json:"values"`
}

// ---- Flux's types.

type NamespacedName struct {
	Namespace string
	Name      string
}

func (n NamespacedName) String() string { return n.Namespace + "/" + n.Name }

type TypeMeta struct {
	APIVersion string
	Kind       string
}

type NameMeta struct {
	Name      string
	Namespace string
}

type ResourceIdentifier struct {
	TypeMeta
	NameMeta
}

type ObjectIdentifier struct {
	ResourceIdentifier
}

type Change struct {
	OldValue string
	NewValue string
	Setter   string
}

type Changes []Change

type ObjectChanges map[ObjectIdentifier]Changes

type FileChanges map[string]ObjectChanges

type Result struct {
	FileChanges FileChanges
}

func (r *Result) add(file string, id ObjectIdentifier, c Change) {
	if r.FileChanges == nil {
		r.FileChanges = FileChanges{}
	}
	if r.FileChanges[file] == nil {
		r.FileChanges[file] = ObjectChanges{}
	}
	r.FileChanges[file][id] = append(r.FileChanges[file][id], c)
}

func sortedChanges(cs Changes) Changes {
	out := append(Changes(nil), cs...)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Setter != b.Setter {
			return a.Setter < b.Setter
		}
		if a.OldValue != b.OldValue {
			return a.OldValue < b.OldValue
		}
		return a.NewValue < b.NewValue
	})
	return out
}

// Changes: every change once, sorted by setter, old value, new value.
func (r Result) Changes() Changes {
	seen := map[Change]bool{}
	var all Changes
	for _, objects := range r.FileChanges {
		for _, cs := range objects {
			for _, c := range cs {
				if !seen[c] {
					seen[c] = true
					all = append(all, c)
				}
			}
		}
	}
	return sortedChanges(all)
}

// Objects: the changes of each object across files, sorted.
func (r Result) Objects() ObjectChanges {
	out := ObjectChanges{}
	for _, objects := range r.FileChanges {
		for id, cs := range objects {
			out[id] = append(out[id], cs...)
		}
	}
	for id := range out {
		out[id] = sortedChanges(out[id])
	}
	return out
}

func (c Changes) String() string {
	parts := []string{}
	for _, x := range sortedChanges(c) {
		parts = append(parts, fmt.Sprintf("{OldValue:%q NewValue:%q Setter:%q}", x.OldValue, x.NewValue, x.Setter))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func (oc ObjectChanges) String() string {
	ids := []ObjectIdentifier{}
	for id := range oc {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		a := []string{ids[i].APIVersion, ids[i].Kind, ids[i].Namespace, ids[i].Name}
		b := []string{ids[j].APIVersion, ids[j].Kind, ids[j].Namespace, ids[j].Name}
		for k := range a {
			if a[k] != b[k] {
				return a[k] < b[k]
			}
		}
		return false
	})
	parts := []string{}
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s:%s", id, oc[id]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func (fc FileChanges) String() string {
	files := []string{}
	for f := range fc {
		files = append(files, f)
	}
	sort.Strings(files)
	parts := []string{}
	for _, f := range files {
		parts = append(parts, fmt.Sprintf("%q:%s", f, fc[f]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// ---- Flux before 1.2: .Updated.

type ImageRef interface {
	String() string
	Identifier() string
	Repository() string
	Registry() string
	Name() string
	Policy() NamespacedName
	NewTag() string
	OldTag() string
}

type imageRef struct {
	ref, identifier, repository, registry, name string
	policy                                      NamespacedName
	newTag, oldTag                              string
}

func (i imageRef) String() string         { return i.ref }
func (i imageRef) Identifier() string     { return i.identifier }
func (i imageRef) Repository() string     { return i.repository }
func (i imageRef) Registry() string       { return i.registry }
func (i imageRef) Name() string           { return i.name }
func (i imageRef) Policy() NamespacedName { return i.policy }
func (i imageRef) NewTag() string         { return i.newTag }
func (i imageRef) OldTag() string         { return i.oldTag }

type FileResult struct {
	Objects map[ObjectIdentifier][]ImageRef
}

type ImageResult struct {
	Files map[string]FileResult
}

// Flux walked its maps in Go's random order; here files go in byte order
// and objects in fmtsort order, and each policy's image comes once.
func (r ImageResult) walk(each func(ObjectIdentifier, ImageRef)) {
	files := []string{}
	for f := range r.Files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		ids := []ObjectIdentifier{}
		for id := range r.Files[f].Objects {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return lessID(ids[i], ids[j]) })
		for _, id := range ids {
			for _, ref := range r.Files[f].Objects[id] {
				each(id, ref)
			}
		}
	}
}

func (r ImageResult) Images() []ImageRef {
	var out []ImageRef
	seen := map[NamespacedName]bool{}
	r.walk(func(_ ObjectIdentifier, ref ImageRef) {
		if !seen[ref.Policy()] {
			seen[ref.Policy()] = true
			out = append(out, ref)
		}
	})
	return out
}

func (r ImageResult) Objects() map[ObjectIdentifier][]ImageRef {
	out := map[ObjectIdentifier][]ImageRef{}
	r.walk(func(id ObjectIdentifier, ref ImageRef) {
		out[id] = append(out[id], ref)
	})
	return out
}

type TemplateData struct {
	AutomationObject NamespacedName
	Updated          ImageResult
	Changed          Result
	Values           map[string]string
}

// go-containerregistry's reading of an image: registry, repository, fully
// qualified name, identifier.
func parseImage(img image) (string, string, string, string) {
	registry, repo := "", img.Name
	if i := strings.Index(img.Name, "/"); i >= 0 {
		first := img.Name[:i]
		if strings.ContainsAny(first, ".:") {
			registry, repo = first, img.Name[i+1:]
		}
	}
	if registry == "" || registry == "docker.io" {
		registry = "index.docker.io"
	}
	if !strings.Contains(repo, "/") && registry == "index.docker.io" {
		repo = "library/" + repo
	}
	base := registry + "/" + repo
	if img.Digest != nil && *img.Digest != "" {
		return registry, repo, base + "@" + *img.Digest, *img.Digest
	}
	tag := img.Tag
	if tag == "" {
		tag = "latest"
	}
	return registry, repo, base + ":" + tag, tag
}

func reference(img image) string {
	s := img.Name + ":" + img.Tag
	if img.Digest != nil && *img.Digest != "" {
		s += "@" + *img.Digest
	}
	return s
}

func tagOf(ref string) string {
	ref = strings.SplitN(ref, "@", 2)[0]
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ""
	}
	return ref[i+1:]
}

func lessID(a, b ObjectIdentifier) bool {
	x := []string{a.APIVersion, a.Kind, a.Name, a.Namespace}
	y := []string{b.APIVersion, b.Kind, b.Name, b.Namespace}
	for i := range x {
		if x[i] != y[i] {
			return x[i] < y[i]
		}
	}
	return false
}

func toID(o *objectID) ObjectIdentifier {
	if o == nil {
		return ObjectIdentifier{}
	}
	ns := ""
	if o.Namespace != nil {
		ns = *o.Namespace
	}
	return ObjectIdentifier{ResourceIdentifier{TypeMeta{o.APIVersion, o.Kind}, NameMeta{o.Name, ns}}}
}

func build(in input) TemplateData {
	var changed Result
	type objChanges struct {
		id      ObjectIdentifier
		changes []setterChange
	}
	perFile := map[string][]*objChanges{}
	for _, fc := range in.Changes {
		id := toID(fc.Change.Object)
		c := fc.Change
		changed.add(fc.File, id, Change{c.OldValue, c.NewValue, c.Setter})
		var slot *objChanges
		for _, o := range perFile[fc.File] {
			if o.id == id {
				slot = o
			}
		}
		if slot == nil {
			slot = &objChanges{id: id}
			perFile[fc.File] = append(perFile[fc.File], slot)
		}
		slot.changes = append(slot.changes, c)
	}

	updated := ImageResult{Files: map[string]FileResult{}}
	files := []string{}
	for f := range perFile {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		objs := perFile[f]
		sort.Slice(objs, func(i, j int) bool { return lessID(objs[i].id, objs[j].id) })
		fr := FileResult{Objects: map[ObjectIdentifier][]ImageRef{}}
		for _, o := range objs {
			var policies []string
			for _, c := range o.changes {
				if _, ok := in.Images[c.Policy]; !ok {
					continue
				}
				dup := false
				for _, p := range policies {
					dup = dup || p == c.Policy
				}
				if !dup {
					policies = append(policies, c.Policy)
				}
			}
			var refs []ImageRef
			for _, p := range policies {
				img := in.Images[p]
				oldTag := ""
				for _, c := range o.changes {
					if c.Policy != p {
						continue
					}
					if c.Setter == p {
						oldTag = tagOf(c.OldValue)
						break
					}
					if c.Setter == p+":tag" {
						oldTag = c.OldValue
						break
					}
				}
				registry, repo, name, id := parseImage(img)
				ns, pname := "", p
				if i := strings.Index(p, ":"); i >= 0 {
					ns, pname = p[:i], p[i+1:]
				}
				ref := imageRef{reference(img), id, repo, registry, name, NamespacedName{ns, pname}, img.Tag, oldTag}
				refs = append(refs, ref)
			}
			if len(refs) == 0 {
				continue
			}
			fr.Objects[o.id] = refs
		}
		if len(fr.Objects) > 0 {
			updated.Files[f] = fr
		}
	}
	values := in.Values
	if len(values) == 0 {
		values = nil
	}
	return TemplateData{
		AutomationObject: NamespacedName{in.Namespace, in.Name},
		Updated:          updated,
		Changed:          changed,
		Values:           values,
	}
}

// ---- sprig's functions, with sprig's semantics.

func strval(v interface{}) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	default:
		return fmt.Sprintf("%v", v)
	}
}

func strslice(v interface{}) []string {
	switch v := v.(type) {
	case []string:
		return v
	case []interface{}:
		out := []string{}
		for _, s := range v {
			if s != nil {
				out = append(out, strval(s))
			}
		}
		return out
	}
	val := reflect.ValueOf(v)
	switch val.Kind() {
	case reflect.Array, reflect.Slice:
		out := []string{}
		for i := 0; i < val.Len(); i++ {
			if x := val.Index(i).Interface(); x != nil {
				out = append(out, strval(x))
			}
		}
		return out
	}
	if v == nil {
		return []string{}
	}
	return []string{strval(v)}
}

func empty(given interface{}) bool {
	g := reflect.ValueOf(given)
	if !g.IsValid() {
		return true
	}
	switch g.Kind() {
	case reflect.Array, reflect.Slice, reflect.Map, reflect.String:
		return g.Len() == 0
	case reflect.Bool:
		return !g.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return g.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return g.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return g.Float() == 0
	case reflect.Struct:
		return false
	default:
		return g.IsNil()
	}
}

func indent(spaces int, v string) string {
	pad := strings.Repeat(" ", spaces)
	return pad + strings.Replace(v, "\n", "\n"+pad, -1)
}

var funcs = template.FuncMap{
	"trim":       strings.TrimSpace,
	"trimPrefix": func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
	"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
	"upper":      strings.ToUpper,
	"lower":      strings.ToLower,
	"replace":    func(old, new, src string) string { return strings.Replace(src, old, new, -1) },
	"join":       func(sep string, v interface{}) string { return strings.Join(strslice(v), sep) },
	"default": func(d interface{}, given ...interface{}) interface{} {
		if len(given) == 0 || empty(given[0]) {
			return d
		}
		return given[0]
	},
	"quote": func(str ...interface{}) string {
		out := []string{}
		for _, s := range str {
			if s != nil {
				out = append(out, fmt.Sprintf("%q", strval(s)))
			}
		}
		return strings.Join(out, " ")
	},
	"indent":    indent,
	"nindent":   func(spaces int, v string) string { return "\n" + indent(spaces, v) },
	"contains":  func(substr, s string) bool { return strings.Contains(s, substr) },
	"hasPrefix": func(prefix, s string) bool { return strings.HasPrefix(s, prefix) },
	"hasSuffix": func(suffix, s string) bool { return strings.HasSuffix(s, suffix) },
}

type result struct {
	Ok  bool   `json:"ok"`
	Out string `json:"out,omitempty"`
	Err string `json:"err,omitempty"`
}

func run(text string, data TemplateData) result {
	t, err := template.New("commit message").Funcs(funcs).Parse(text)
	if err != nil {
		return result{Err: err.Error()}
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return result{Err: err.Error()}
	}
	return result{Ok: true, Out: b.String()}
}

func main() {
	var doc struct {
		Inputs    []input  `json:"inputs"`
		Templates []string `json:"templates"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&doc); err != nil {
		fmt.Fprintln(os.Stderr, "reading the input:", err)
		os.Exit(2)
	}
	var out []result
	for _, text := range doc.Templates {
		for _, in := range doc.Inputs {
			out = append(out, run(text, build(in)))
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "writing the output:", err)
		os.Exit(2)
	}
}
