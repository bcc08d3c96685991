// render: a test harness that renders a Helm v3 chart as `helm template`
// would, for tests on machines without helm. It is not Helm: it implements
// the subset of Helm's template engine the shift chart uses, the same way:
//
//   - values: the chart's values.yaml deep-merged with each -f file in
//     order (maps merge, everything else replaces), parsed as Helm parses
//     them (YAML through JSON, so numbers are float64);
//   - objects: .Values, .Release (Name, Namespace, Service "Helm",
//     IsInstall true), .Chart (Name, Version, AppVersion from Chart.yaml);
//   - functions: Sprig v3's text functions without env and expandenv (as
//     Helm), plus Helm's include, toYaml (sigs.k8s.io/yaml's output: JSON
//     marshalled, then YAML, trailing newline trimmed), toJson, fromYaml and
//     required; no tpl, lookup, .Files or .Capabilities (the chart uses
//     none);
//   - missing keys render as empty (Helm's non-strict mode), every file in
//     templates/ is parsed together, files starting with "_" only define,
//     and each other file's output is printed as "# Source: shift/templates/F"
//     followed by its documents.
//
// Usage: render CHART_DIR [-f VALUES.yaml]... [--release NAME] [--namespace NS]
package main

import (
	"bytes"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig" // Sprig v3 (Debian installs it without the /v3)
	"github.com/ghodss/yaml"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "render: "+format+"\n", args...)
	os.Exit(1)
}

func readYaml(path string) map[string]interface{} {
	data, err := ioutil.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		fail("%s: %v", path, err)
	}
	return out
}

// merge copies src into dst: maps merge key by key, other values replace.
func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func toYaml(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: render CHART_DIR [-f VALUES.yaml]... [--release NAME] [--namespace NS]")
	}
	chartDir := os.Args[1]
	release, namespace := "shift", "default"
	values := readYaml(filepath.Join(chartDir, "values.yaml"))
	for i := 2; i < len(os.Args); i++ {
		if i+1 >= len(os.Args) {
			fail("%s needs a value", os.Args[i])
		}
		switch os.Args[i] {
		case "-f":
			merge(values, readYaml(os.Args[i+1]))
		case "--release":
			release = os.Args[i+1]
		case "--namespace":
			namespace = os.Args[i+1]
		default:
			fail("unknown argument %s", os.Args[i])
		}
		i++
	}
	chart := readYaml(filepath.Join(chartDir, "Chart.yaml"))
	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": release, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart": map[string]interface{}{
			"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"],
		},
	}

	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	root := template.New("chart").Option("missingkey=zero")
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["toYaml"] = toYaml
	funcs["toJson"] = func(v interface{}) string {
		data, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		out, err := yaml.YAMLToJSON(data)
		if err != nil {
			return ""
		}
		return string(out)
	}
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		out := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &out); err != nil {
			out["Error"] = err.Error()
		}
		return out
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, fmt.Errorf(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, fmt.Errorf(msg)
		}
		return v, nil
	}
	root.Funcs(funcs)

	files, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		fail("%v", err)
	}
	sort.Strings(files)
	var rendered []string
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasSuffix(base, ".txt") {
			continue
		}
		data, err := ioutil.ReadFile(f)
		if err != nil {
			fail("%v", err)
		}
		if _, err := root.New(base).Parse(string(data)); err != nil {
			fail("%s: %v", base, err)
		}
		if !strings.HasPrefix(base, "_") {
			rendered = append(rendered, base)
		}
	}
	for _, name := range rendered {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, top); err != nil {
			fail("%s: %v", name, err)
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Printf("---\n# Source: %s/templates/%s\n%s\n", chart["name"], name, strings.TrimSpace(text))
	}
}
