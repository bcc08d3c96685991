#!/usr/bin/env python3
"""Tests of deploy/k8s without a cluster or helm (ctest's deploy_chart_test):

- the chart's generated templates are in sync with the rules and dashboards;
- the render harness (Go text/template + Sprig, as Helm) passes its toYaml
  test and renders the chart for every file in values/ and ../examples/;
- values.schema.json accepts the defaults, values/ and ../examples/, and
  rejects every file in bad-values/ with the error its "# rejected with:"
  line names;
- every rendered object validates against its Kubernetes (or Prometheus
  Operator) schema, and type-checks strictly (unknown fields rejected) with
  TypeScript against kubernetes-models' interfaces;
- the rendered objects are the ones the values ask for (GPUs per group,
  groups, probes, Secrets, monitoring objects on and off, each pod value
  in its pods, model.init, the GPU node pool example);
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
# Values files that must render and validate: name -> path.
VALUES = {os.path.basename(p)[:-5]: p for p in glob.glob(os.path.join(HERE, "values", "*.yaml"))}
VALUES.update({"example-" + os.path.basename(p)[:-5]: p
               for p in glob.glob(os.path.join(K8S, "examples", "*.yaml"))})
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
        for name, path in sorted(VALUES.items()):
            cls.rendered[name] = cls.render_values(name, path)

    @classmethod
    def render_values(cls, name, path):
        """Renders the chart with `path`, writes NAME.yaml, returns the objects."""
        out = run([cls.render, CHART, "-f", path, "--release", "shift"])
        assert out.returncode == 0, "%s: %s" % (name, out.stderr)
        with open(os.path.join(cls.tmp, name + ".yaml"), "w") as f:
            f.write(out.stdout)
        return [d for d in yaml.safe_load_all(out.stdout) if d]

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
        for path in [None] + sorted(VALUES.values()):
            out = run(["node", "validate.mjs", "values", schema, defaults] + ([path] if path else []),
                      cwd=HERE)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        bad = sorted(glob.glob(os.path.join(HERE, "bad-values", "*.yaml")))
        self.assertGreaterEqual(len(bad), 25)
        for path in bad:
            out = run(["node", "validate.mjs", "values", schema, defaults, path], cwd=HERE)
            self.assertEqual(out.returncode, 1, "%s was accepted: %s" % (path, out.stdout))
            self.assertIn("invalid", out.stdout)
            with open(path) as f:
                expected = [l[len("# rejected with: "):].strip() for l in f
                            if l.startswith("# rejected with: ")]
            for message in expected:  # rejected for the reason the file is about
                self.assertIn(message, out.stdout, path)

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

    def test_a_misspelt_field_in_an_extra_volume_fails_the_strict_check(self):
        # extraVolumes are Kubernetes Volumes, open in the values schema: a
        # misspelt field there passes the schema and fails on the object.
        values = os.path.join(self.tmp, "misspelt-volume-values.yaml")
        with open(values, "w") as f:
            yaml.safe_dump({"workers": {"device": "cpu", "extraVolumes": [
                {"name": "scratch", "emptyDir": {"sizeLimt": "1Gi"}}]}}, f)
        out = run(["node", "validate.mjs", "values", os.path.join(CHART, "values.schema.json"),
                   os.path.join(CHART, "values.yaml"), values], cwd=HERE)
        self.assertEqual(out.returncode, 0, out.stdout)
        self.render_values("misspelt-volume", values)
        _, tsc = self.generate_and_type_check(
            "objects", [os.path.join(self.tmp, "misspelt-volume.yaml")])
        self.assertNotEqual(tsc.returncode, 0)
        self.assertIn("sizeLimt", tsc.stdout)

    def pods(self, name):
        """{"router": pod spec with metadata, "worker": ...} of one rendering."""
        (dep,) = self.objects(name, "Deployment")
        (sts,) = self.objects(name, "StatefulSet")
        return {"router": dep["spec"]["template"], "worker": sts["spec"]["template"]}

    def test_pod_values_reach_their_pods(self):
        with open(VALUES["cpu-1-group-pod-values"]) as f:
            values = yaml.safe_load(f)
        chart_env = ["POD_NAME", "POD_IP", "SHIFT_WORLD_SIZE", "SHIFT_HEALTH_PORT",
                     "SHIFT_METRICS_PORT"]
        for component, key in (("router", "router"), ("worker", "workers")):
            given = values[key]
            template = self.pods("cpu-1-group-pod-values")[component]
            pod, meta = template["spec"], template["metadata"]
            (container,) = pod["containers"]
            env = container["env"]
            if component == "worker":  # the chart's variables first, then the user's
                self.assertEqual([e["name"] for e in env[:5]], chart_env)
                env = env[5:]
            self.assertEqual(env, given["env"], component)
            self.assertEqual(container["envFrom"], given["envFrom"], component)
            self.assertEqual(pod["affinity"], given["affinity"], component)
            self.assertEqual(pod["runtimeClassName"], given["runtimeClassName"], component)
            self.assertEqual(pod["priorityClassName"], given["priorityClassName"], component)
            self.assertEqual(pod["volumes"][-len(given["extraVolumes"]):], given["extraVolumes"])
            self.assertEqual(container["volumeMounts"][-len(given["extraVolumeMounts"]):],
                             given["extraVolumeMounts"], component)
            self.assertEqual(meta["annotations"], given["podAnnotations"], component)
            for label, value in given["podLabels"].items():
                self.assertEqual(meta["labels"][label], value, component)
            self.assertEqual(meta["labels"]["app.kubernetes.io/component"], component)
        # Unset, none of them appears.
        for component, template in self.pods("cpu-1-group").items():
            pod = template["spec"]
            for field in ("affinity", "runtimeClassName", "priorityClassName", "initContainers"):
                self.assertNotIn(field, pod, component)
            self.assertNotIn("annotations", template["metadata"], component)
            self.assertNotIn("envFrom", pod["containers"][0], component)
            self.assertEqual(len(template["metadata"]["labels"]), 6, component)
        self.assertNotIn("env", self.pods("cpu-1-group")["router"]["spec"]["containers"][0])

    def test_model_init_places_the_model_before_shift_starts(self):
        with open(VALUES["cpu-1-group-pod-values"]) as f:
            values = yaml.safe_load(f)
        init_values = values["model"]["init"]
        for component, template in self.pods("cpu-1-group-pod-values").items():
            pod = template["spec"]
            (init,) = pod["initContainers"]
            self.assertEqual(init["image"], init_values["image"])
            self.assertEqual(init["imagePullPolicy"], "Always")
            self.assertEqual(init["command"], init_values["command"])
            self.assertEqual(init["args"], init_values["args"])
            self.assertEqual(init["env"][0], {"name": "SHIFT_MODEL_DIR", "value": "/model/llama/8b"})
            # One shared volume: the router's init container places the weights too.
            self.assertEqual(init["env"][1], {"name": "SHIFT_MODEL_WEIGHTS", "value": "true"})
            self.assertEqual(init["env"][2:], init_values["env"])
            self.assertEqual(init["envFrom"], init_values["envFrom"])
            self.assertEqual(init["resources"], init_values["resources"])
            # The init container writes the volume; shift's containers only read it.
            self.assertEqual(init["volumeMounts"][0], {"name": "model", "mountPath": "/model"})
            self.assertTrue(pod["containers"][0]["volumeMounts"][0]["readOnly"])
            (model,) = [v for v in pod["volumes"] if v["name"] == "model"]
            self.assertFalse(model["persistentVolumeClaim"]["readOnly"], component)
            extra = values["router" if component == "router" else "workers"]["extraVolumeMounts"]
            self.assertEqual(init["volumeMounts"][1:], extra, component)
        # Without it the pods cannot write the volume.
        for component, template in self.pods("gpu-1-group-p2").items():
            (model,) = [v for v in template["spec"]["volumes"] if v["name"] == "model"]
            self.assertTrue(model["persistentVolumeClaim"]["readOnly"], component)
        for component, template in self.pods("cpu-1-group").items():
            (model,) = [v for v in template["spec"]["volumes"] if v["name"] == "model"]
            self.assertEqual(model["hostPath"]["type"], "Directory", component)
        # A node directory the init container fills may not exist yet.
        values = os.path.join(self.tmp, "host-path-init-values.yaml")
        with open(values, "w") as f:
            yaml.safe_dump({"model": {"source": "hostPath", "init": {
                "enabled": True, "image": "fetch:1"}}}, f)
        for doc in self.render_values("host-path-init", values):
            if doc["kind"] in ("Deployment", "StatefulSet"):
                (model,) = [v for v in doc["spec"]["template"]["spec"]["volumes"]
                            if v["name"] == "model"]
                self.assertEqual(model["hostPath"]["type"], "DirectoryOrCreate")
        for component, template in self.pods("cpu-1-group-emptydir-init").items():
            pod = template["spec"]
            (model,) = [v for v in pod["volumes"] if v["name"] == "model"]
            self.assertEqual(model, {"name": "model", "emptyDir": {}}, component)
            self.assertEqual(pod["initContainers"][0]["args"], ["--to=/model"])
            # The router's own volume needs no weights: it reads none.
            self.assertEqual(pod["initContainers"][0]["env"],
                             [{"name": "SHIFT_MODEL_DIR", "value": "/model"},
                              {"name": "SHIFT_MODEL_WEIGHTS",
                               "value": "false" if component == "router" else "true"}])

    def test_the_internal_token_reaches_the_router_and_every_worker(self):
        for component, template in self.pods("cpu-1-group").items():
            pod = template["spec"]
            self.assertEqual(pod["securityContext"]["fsGroup"], 10001, component)
            container = pod["containers"][0]
            self.assertIn("--internal_token_file=/etc/shift/internal-token/token",
                          container["args"], component)
            self.assertIn({"name": "internal-token", "mountPath": "/etc/shift/internal-token",
                           "readOnly": True}, container["volumeMounts"], component)
            (volume,) = [v for v in pod["volumes"] if v["name"] == "internal-token"]
            # 0440: the pod's group reads it; shift refuses a file any user may read.
            self.assertEqual(volume["secret"], {"secretName": "shift-internal-token",
                                                "defaultMode": 0o440}, component)
        # Off, with mutual TLS in its place.
        values = os.path.join(self.tmp, "token-off-values.yaml")
        with open(values, "w") as f:
            yaml.safe_dump({"internalToken": {"secretName": ""},
                            "tls": {"secretName": "router-tls",
                                    "workerSecretName": "worker-tls"}}, f)
        pods = [d["spec"]["template"]["spec"] for d in self.render_values("token-off", values)
                if d["kind"] in ("Deployment", "StatefulSet")]
        self.assertEqual(len(pods), 2)
        for pod in pods:
            self.assertIn("--internal_token_file=none", pod["containers"][0]["args"])
            self.assertFalse([v for v in pod["volumes"] if v["name"] == "internal-token"])

    def test_the_router_can_have_a_volume_of_its_own_and_pin_the_weights(self):
        pods = self.pods("cpu-1-group-router-own-volume")
        volumes = {c: [v for v in t["spec"]["volumes"] if v["name"] == "model"][0]
                   for c, t in pods.items()}
        self.assertEqual(volumes["router"], {"name": "model", "emptyDir": {}})
        self.assertEqual(volumes["worker"]["persistentVolumeClaim"]["claimName"], "shift-model")
        for component, weights in (("router", "false"), ("worker", "true")):
            (init,) = pods[component]["spec"]["initContainers"]
            self.assertIn({"name": "SHIFT_MODEL_WEIGHTS", "value": weights}, init["env"])
        (router,) = pods["router"]["spec"]["containers"]
        self.assertIn("--expected_weights_digest=0123456789abcdef", router["args"])
        # Unset, the flag is not passed.
        (router,) = self.pods("cpu-1-group")["router"]["spec"]["containers"]
        self.assertFalse([a for a in router["args"] if "expected_weights_digest" in a])

    def test_gpu_node_pool_example(self):
        pods = self.pods("example-gpu-node-pool")
        worker = pods["worker"]["spec"]
        (container,) = worker["containers"]
        self.assertEqual(container["resources"]["limits"]["nvidia.com/gpu"], 8)
        self.assertEqual(worker["runtimeClassName"], "nvidia")
        self.assertEqual(worker["nodeSelector"], {"cloud.example.com/node-pool": "gpu-h100"})
        self.assertIn({"name": "NCCL_SOCKET_IFNAME", "value": "eth0"}, container["env"])
        self.assertIn("--device=cuda", container["args"])
        anti = worker["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        self.assertEqual(anti[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"],
                         "worker")
        (sts,) = self.objects("example-gpu-node-pool", "StatefulSet")
        self.assertEqual(sts["spec"]["replicas"], 2)
        router = pods["router"]["spec"]
        term = router["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        self.assertEqual(term["nodeSelectorTerms"][0]["matchExpressions"][0]["operator"], "NotIn")
        self.assertNotIn("nvidia.com/gpu", router["containers"][0]["resources"].get("limits", {}))

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
        self.assertEqual(secrets, {"shift-tls", "shift-api-keys", "shift-internal-token"})
        # Workers present a certificate of their own, never the router's key.
        for sts in self.objects("gpu-2-groups-p8-monitoring", "StatefulSet"):
            worker = sts["spec"]["template"]["spec"]
            secrets = {v["secret"]["secretName"] for v in worker["volumes"] if "secret" in v}
            self.assertEqual(secrets, {"shift-worker-tls", "shift-internal-token"})
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

    def test_the_http_api_port_is_served_unless_zero(self):
        for name, port in [("gpu-1-group-p2", 8000), ("cpu-1-group-no-http", None)]:
            (dep,) = self.objects(name, "Deployment")
            (router,) = dep["spec"]["template"]["spec"]["containers"]
            flags = [a for a in router["args"] if a.startswith("--http_port")]
            ports = {p["name"]: p["containerPort"] for p in router["ports"]}
            service = [s for s in self.objects(name, "Service")
                       if any(p["name"] == "grpc" for p in s["spec"]["ports"])][0]
            service_ports = {p["name"]: p for p in service["spec"]["ports"]}
            if port is None:
                self.assertEqual(flags, [], name)
                self.assertNotIn("http", ports, name)
                self.assertNotIn("http", service_ports, name)
                continue
            self.assertEqual(flags, ["--http_port=%d" % port], name)
            self.assertEqual(ports["http"], port, name)
            self.assertEqual(service_ports["http"]["port"], port, name)
            self.assertEqual(service_ports["http"]["targetPort"], "http", name)
            (policy,) = self.objects(name, "NetworkPolicy")
            open_ports = [p["port"] for r in policy["spec"]["ingress"] if "from" not in r
                          for p in r["ports"]]
            self.assertIn(port, open_ports, name)

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
