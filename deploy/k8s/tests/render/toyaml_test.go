package main

import "testing"

// Helm's toYaml is sigs.k8s.io/yaml's Marshal (JSON, then YAML through
// go-yaml v2) with the trailing newline trimmed: keys sorted, two-space
// indents, list items level with their key, strings quoted only where YAML
// would read them otherwise. These are that output for values the chart
// passes to toYaml, as Helm 3 prints them.
func TestToYamlMatchesHelm(t *testing.T) {
	cases := []struct {
		in   interface{}
		want string
	}{
		{map[string]interface{}{
			"requests": map[string]interface{}{"cpu": "2", "memory": "2Gi"},
			"limits":   map[string]interface{}{"memory": "4Gi", "nvidia.com/gpu": float64(8)},
		}, "limits:\n  memory: 4Gi\n  nvidia.com/gpu: 8\nrequests:\n  cpu: \"2\"\n  memory: 2Gi"},
		{[]interface{}{map[string]interface{}{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}},
			"- effect: NoSchedule\n  key: nvidia.com/gpu\n  operator: Exists"},
		{map[string]interface{}{"release": "prometheus", "on": "true", "n": "1e3"},
			"\"n\": \"1e3\"\n\"on\": \"true\"\nrelease: prometheus"},
		{map[string]interface{}{}, "{}"},
	}
	for _, c := range cases {
		if got := toYaml(c.in); got != c.want {
			t.Errorf("toYaml(%v) =\n%s\nwant\n%s", c.in, got, c.want)
		}
	}
}
