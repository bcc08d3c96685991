#!/usr/bin/env python3
"""Tests of deploy/k8s without a cluster or helm (ctest's deploy_chart_test):

- the chart's generated templates are in sync with the rules and dashboards;
- the render harness (Go text/template + Sprig, as Helm) passes its toYaml
  test and renders the chart for every file in values/;
- values.schema.json accepts the defaults and values/, and rejects every
  file in bad-values/;
- every rendered object validates against its Kubernetes (or Prometheus
  Operator) schema, and type-checks strictly (unknown fields rejected) with
  TypeScript against kubernetes-models' interfaces;
- the rendered objects are the ones the values ask for (GPUs per group,
  groups, probes, Secrets, monitoring objects on and off);
- the Grafana dashboards type-check against @grafana/schema's Dashboard;
- promtool check rules and promtool test rules pass.

Needs go (golang-go with golang-github-masterminds-sprig-dev and
golang-github-ghodss-yaml-dev), node and npm (the validators are installed
with `npm ci` into deploy/k8s/tests/node_modules), promtool and PyYAML.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
K8S = os.path.dirname(HERE)
CHART = os.path.join(K8S, "charts", "shift")
GOENV = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="")


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


def type_check(ts):
    """tsc --strict on one generated file: excess properties are errors."""
    return run([os.path.join(HERE, "node_modules", ".bin", "tsc"), "--noEmit", "--strict",
                "--module", "nodenext", "--moduleResolution", "nodenext", "--skipLibCheck",
                "--target", "es2022", ts], cwd=HERE)


class ChartTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-chart-")
        GOENV["GOCACHE"] = os.path.join(cls.tmp, "gocache")
        cls.render = os.path.join(cls.tmp, "render")
        built = run(["go", "build", "-o", cls.render, "."], cwd=os.path.join(HERE, "render"),
                    env=GOENV)
        assert built.returncode == 0, built.stderr
        if not os.path.isdir(os.path.join(HERE, "node_modules")):
            npm = run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE)
            assert npm.returncode == 0, npm.stdout + npm.stderr
        cls.rendered = {}
        for path in sorted(glob.glob(os.path.join(HERE, "values", "*.yaml"))):
            name = os.path.basename(path)[:-5]
            out = run([cls.render, CHART, "-f", path, "--release", "shift"])
            assert out.returncode == 0, "%s: %s" % (name, out.stderr)
            file = os.path.join(cls.tmp, name + ".yaml")
            with open(file, "w") as f:
                f.write(out.stdout)
            cls.rendered[name] = [d for d in yaml.safe_load_all(out.stdout) if d]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def generate_and_type_check(self, kind, inputs):
        """validate.mjs KIND (objects or dashboards) on `inputs`, then tsc on
        the TypeScript it wrote: (the validator's result, tsc's result)."""
        ts = os.path.join(HERE, "%s-%d.gen.ts" % (kind, os.getpid()))
        try:
            generated = run(["node", "validate.mjs", kind, ts] + inputs, cwd=HERE)
            return generated, type_check(ts)
        finally:
            if os.path.exists(ts):
                os.remove(ts)

    def objects(self, name, kind):
        return [d for d in self.rendered[name] if d["kind"] == kind]

    def test_generated_templates_are_in_sync(self):
        out = run([sys.executable, os.path.join(K8S, "sync-chart"), "--check"])
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_to_yaml_matches_helm(self):
        out = run(["go", "test", "."], cwd=os.path.join(HERE, "render"), env=GOENV)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_values_schema(self):
        schema, defaults = os.path.join(CHART, "values.schema.json"), os.path.join(CHART,
                                                                                   "values.yaml")
        for path in [None] + sorted(glob.glob(os.path.join(HERE, "values", "*.yaml"))):
            out = run(["node", "validate.mjs", "values", schema, defaults] + ([path] if path else []),
                      cwd=HERE)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        bad = sorted(glob.glob(os.path.join(HERE, "bad-values", "*.yaml")))
        self.assertGreaterEqual(len(bad), 5)
        for path in bad:
            out = run(["node", "validate.mjs", "values", schema, defaults, path], cwd=HERE)
            self.assertEqual(out.returncode, 1, "%s was accepted: %s" % (path, out.stdout))
            self.assertIn("invalid", out.stdout)

    def test_objects_validate_strictly(self):
        files = [os.path.join(self.tmp, n + ".yaml") for n in sorted(self.rendered)]
        out, tsc = self.generate_and_type_check("objects", files)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(tsc.returncode, 0, tsc.stdout + tsc.stderr)

    def test_a_misspelt_field_fails_the_strict_check(self):
        # The check above must be able to fail: a container field the API
        # does not have.
        broken = os.path.join(self.tmp, "broken.yaml")
        docs = [d for d in self.rendered["cpu-1-group"] if d["kind"] == "Deployment"]
        docs[0]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        with open(broken, "w") as f:
            yaml.safe_dump_all(docs, f)
        _, tsc = self.generate_and_type_check("objects", [broken])
        self.assertNotEqual(tsc.returncode, 0)
        self.assertIn("imagePullPolicyy", tsc.stdout)

    def test_workers_follow_the_values(self):
        for name, groups, world, gpus in [("gpu-1-group-p2", 1, 2, 2), ("cpu-1-group", 1, 1, None),
                                          ("cpu-2-groups-p2-monitoring", 2, 2, None),
                                          ("gpu-2-groups-p8-monitoring", 2, 8, 8)]:
            (sts,) = self.objects(name, "StatefulSet")
            self.assertEqual(sts["spec"]["replicas"], groups, name)
            pod = sts["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            self.assertEqual(container["command"], ["shift-supervisor"])
            env = {e["name"]: e.get("value") for e in container["env"]}
            self.assertEqual(env["SHIFT_WORLD_SIZE"], str(world), name)
            limits = container["resources"].get("limits", {})
            self.assertEqual(limits.get("nvidia.com/gpu"), gpus, name)
            self.assertIn("--device=%s" % ("cuda" if gpus else "cpu"), container["args"])
            # Ranks load the router's layout.
            (router,) = self.objects(name, "Deployment")[0]["spec"]["template"]["spec"][
                "containers"]
            sp = [a for a in router["args"] if a.startswith("--sp_degree=")]
            self.assertEqual(len(sp), 1, name)
            self.assertIn(sp[0], container["args"], name)
            metrics_ports = [p for p in container["ports"] if p["name"].startswith("metrics-")]
            self.assertEqual(len(metrics_ports), world, name)
            shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
            self.assertEqual(shm[0]["emptyDir"]["medium"], "Memory")
            self.assertEqual(container["startupProbe"]["grpc"]["service"], "shift.live")
            self.assertEqual(container["livenessProbe"]["grpc"]["service"], "shift.live")
            self.assertNotIn("service", container["readinessProbe"]["grpc"])

    def test_router_probes_drain_and_secrets(self):
        (dep,) = self.objects("gpu-2-groups-p8-monitoring", "Deployment")
        pod = dep["spec"]["template"]["spec"]
        (router,) = pod["containers"]
        args = router["args"]
        self.assertIn("--shift_policy=cost", args)
        self.assertIn("--groups=2", args)
        self.assertIn("--world_size=8", args)
        self.assertIn("--sp_degree=0", args)  # pure SP, the default
        self.assertIn("--tls_ca=/etc/shift/tls/ca.crt", args)
        self.assertIn("--api_key_file=/etc/shift/api-keys/api-keys", args)
        self.assertIn("--max_num_seqs=256", args)
        self.assertGreater(pod["terminationGracePeriodSeconds"], 30)  # the drain is 30 s
        self.assertEqual(router["livenessProbe"]["grpc"]["service"], "shift.live")
        self.assertEqual(router["readinessProbe"]["grpc"]["service"], "shift.v1.Generation")
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        self.assertEqual(secrets, {"shift-tls", "shift-api-keys"})
        # Workers present a certificate of their own, never the router's key.
        for sts in self.objects("gpu-2-groups-p8-monitoring", "StatefulSet"):
            worker = sts["spec"]["template"]["spec"]
            secrets = {v["secret"]["secretName"] for v in worker["volumes"] if "secret" in v}
            self.assertEqual(secrets, {"shift-worker-tls"})
            self.assertIn("--tls_cert=/etc/shift/tls/tls.crt", worker["containers"][0]["args"])
        # The internal Service publishes the router before it is ready
        # (ranks must reach it for it to become ready).
        internal = [s for s in self.objects("gpu-2-groups-p8-monitoring", "Service")
                    if s["metadata"]["name"].endswith("-internal")]
        self.assertTrue(internal[0]["spec"]["publishNotReadyAddresses"])

    def test_network_policy_keeps_the_internal_port_to_workers(self):
        (policy,) = self.objects("gpu-1-group-p2", "NetworkPolicy")
        internal = [r for r in policy["spec"]["ingress"] if "from" in r]
        self.assertEqual(internal[0]["ports"], [{"port": 50052}])
        self.assertEqual(internal[0]["from"][0]["podSelector"]["matchLabels"]
                         ["app.kubernetes.io/component"], "worker")
        open_ports = [p["port"] for r in policy["spec"]["ingress"] if "from" not in r
                      for p in r["ports"]]
        self.assertNotIn(50052, open_ports)
        self.assertEqual(self.objects("cpu-1-group", "NetworkPolicy"), [])

    def test_monitoring_objects_on_and_off(self):
        for name, on in [("gpu-1-group-p2", False), ("cpu-1-group", False),
                         ("cpu-2-groups-p2-monitoring", True), ("gpu-2-groups-p8-monitoring", True)]:
            kinds = [d["kind"] for d in self.rendered[name]]
            for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap"):
                self.assertEqual(kind in kinds, on, "%s: %s" % (name, kind))
        (rule,) = self.objects("gpu-2-groups-p8-monitoring", "PrometheusRule")
        with open(os.path.join(K8S, "prometheus", "rules.yaml")) as f:
            self.assertEqual(rule["spec"], yaml.safe_load(f))
        (cm,) = self.objects("gpu-2-groups-p8-monitoring", "ConfigMap")
        self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
        with open(os.path.join(K8S, "grafana", "shift.json")) as f:
            self.assertEqual(yaml.safe_load(cm["data"]["shift.json"]), yaml.safe_load(f))
        (monitor,) = self.objects("gpu-2-groups-p8-monitoring", "ServiceMonitor")
        self.assertEqual(len(monitor["spec"]["endpoints"]), 1 + 8)

    def test_dashboards_type_check(self):
        out, tsc = self.generate_and_type_check(
            "dashboards", sorted(glob.glob(os.path.join(K8S, "grafana", "*.json"))))
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(tsc.returncode, 0, tsc.stdout + tsc.stderr)

    def test_a_wrong_dashboard_fails_the_type_check(self):
        broken = os.path.join(self.tmp, "broken.json")
        with open(os.path.join(K8S, "grafana", "shift.json")) as f:
            dashboard = json.load(f)
        dashboard["schemaVersion"] = "39"  # a number in Grafana's schema
        dashboard["panels"][1]["gridPoss"] = dashboard["panels"][1]["gridPos"]
        with open(broken, "w") as f:
            json.dump(dashboard, f)
        _, tsc = self.generate_and_type_check("dashboards", [broken])
        self.assertNotEqual(tsc.returncode, 0)
        self.assertIn("not assignable to type 'number'", tsc.stdout)  # schemaVersion
        self.assertIn("gridPoss", tsc.stdout)

    def test_prometheus_rules(self):
        rules = os.path.join(K8S, "prometheus")
        out = run(["promtool", "check", "rules", "rules.yaml"], cwd=rules)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        out = run(["promtool", "test", "rules", "tests.yaml"], cwd=rules)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
