#!/usr/bin/env python3
"""deploy/k8s against a live Prometheus (ctest's deploy_live_test).

A shift-router (cost policy, a low threshold so both modes run) and one
worker group of two ranks started by deploy/docker/shift-supervisor, as the
chart's worker pod runs them, serve a short bounded load on 127.0.0.1:
long and short prompts (SP and TP steps; the short ones with a TPOT target
of their own), a KV cache small enough to
preempt, requests that fail validation, and streams cancelled midway. The
Prometheus server of the Debian package scrapes the router and both ranks
every second and evaluates deploy/k8s/prometheus/rules.yaml (its group
intervals shortened to 2 s). Then:

- every PromQL expression of every panel of every dashboard is evaluated
  through Prometheus's HTTP API at the end of the load and must return data,
  with Grafana's variables substituted ($__rate_interval = 10s) as "All" and
  then under each variable: each value its query finds (namespace, job,
  model, group) in turn, the others "All"; every shift_* metric a panel names
  must exist. Prometheus scrapes router and ranks as the chart's
  ServiceMonitor does: one job for the release, a namespace label;
- every recording rule's series must exist, and every rule (alerts
  included) must have been evaluated with health "ok";
- the supervisor stops the group when one rank dies, and the router marks
  the group out of service (shift_group_in_service 0).
"""
import concurrent.futures
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
K8S = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(K8S))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import cluster  # noqa: E402
import grpc  # noqa: E402

PROMETHEUS = "/usr/bin/prometheus"
SUPERVISOR = os.path.join(ROOT, "deploy", "docker", "shift-supervisor")
RATE_INTERVAL = "10s"


def free_ports(n):
    """A base port with n free ports after it."""
    for _ in range(100):
        base = cluster.free_port()
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no %d consecutive free ports" % n)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read().decode())


NAMESPACE, JOB = "shift-live", "shift-live-release"


def dashboard_variables():
    """{name: (metric selector, label)} of every dashboard's query variables."""
    out = {}
    for path in sorted(glob.glob(os.path.join(K8S, "grafana", "*.json"))):
        with open(path) as f:
            dashboard = json.load(f)
        for v in dashboard.get("templating", {}).get("list", []):
            if v["type"] == "query":
                m = re.match(r"^label_values\((.+), *(\w+)\)$", v["query"]["query"])
                out[v["name"]] = (m.group(1), m.group(2))
    return out


def substitute(expr, values):
    """`expr` with $__rate_interval and each $variable (default: All, .*)."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    return re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), ".*"), expr)


def dashboard_expressions():
    """(dashboard, panel title, expr) for every target of every panel."""
    out = []
    for path in sorted(glob.glob(os.path.join(K8S, "grafana", "*.json"))):
        with open(path) as f:
            dashboard = json.load(f)
        panels = []
        for p in dashboard["panels"]:
            panels.append(p)
            panels.extend(p.get("panels", []))
        for p in panels:
            for t in p.get("targets", []):
                out.append((os.path.basename(path), p["title"], t["expr"]))
        for v in dashboard.get("templating", {}).get("list", []):
            if v["type"] == "query":
                out.append((os.path.basename(path), "variable " + v["name"],
                            re.sub(r"^label_values\((.+), *\w+\)$", r"\1", v["query"]["query"])))
    return out


class LiveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-live-")
        cls.procs = []
        try:
            cls.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start(cls):
        model = cluster.make_model(os.path.join(cls.tmp, "model"))
        ports = os.path.join(cls.tmp, "router.ports")
        cls.router = cls.spawn("router", [
            cluster.ROUTER, "--model=" + model, "--host=127.0.0.1", "--port=0",
            "--internal_port=0", "--metrics_port=0", "--health_port=0", "--ports_file=" + ports,
            "--world_size=2", "--groups=1", "--shift_policy=cost", "--shift_threshold=24",
            "--max_num_seqs=16"])
        deadline = time.time() + 30
        while not (os.path.exists(ports) and cluster.read(ports).endswith("\n")):
            if time.time() > deadline:
                raise RuntimeError("the router did not start")
            time.sleep(0.05)
        fields = dict(kv.split("=") for kv in cluster.read(ports).split())
        cls.client = cluster.shift_client.Client("127.0.0.1:" + fields["grpc"])
        cls.router_metrics = "127.0.0.1:" + fields["metrics"]
        # The worker group, as the chart's pod runs it.
        cls.health_base, cls.metrics_base = free_ports(2), free_ports(2)
        env = dict(os.environ, SHIFT_WORLD_SIZE="2", POD_NAME="shift-worker-0",
                   SHIFT_HEALTH_PORT=str(cls.health_base),
                   SHIFT_METRICS_PORT=str(cls.metrics_base), SHIFT_WORKER=cluster.WORKER,
                   SHIFT_STOP_TIMEOUT_S="10")
        cls.supervisor = cls.spawn("supervisor", [
            "/bin/bash", SUPERVISOR, "--router=127.0.0.1:" + fields["internal"],
            "--model=" + model, "--threads=1", "--kv_cache_bytes=98304"], env=env)
        deadline = time.time() + 60
        while not cls.client.status()["groups"][0]["ready"]:
            if time.time() > deadline or cls.supervisor.poll() is not None:
                raise RuntimeError("the worker group did not form:\n" + cls.logs())
            time.sleep(0.1)
        # Prometheus, scraping every second, with the rules evaluated every 2 s.
        with open(os.path.join(K8S, "prometheus", "rules.yaml")) as f:
            rules = re.sub(r"interval: \d+s", "interval: 2s", f.read())
        with open(os.path.join(cls.tmp, "rules.yaml"), "w") as f:
            f.write(rules)
        workers = ["127.0.0.1:%d" % (cls.metrics_base + r) for r in range(2)]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "2s"},
            "rule_files": [os.path.join(cls.tmp, "rules.yaml")],
            # As the chart's ServiceMonitor (jobLabel: the release) under the
            # Prometheus operator: one job, the pods' namespace.
            "scrape_configs": [
                {"job_name": JOB,
                 "static_configs": [{"targets": [cls.router_metrics] + workers,
                                     "labels": {"namespace": NAMESPACE}}]},
            ],
        }
        with open(os.path.join(cls.tmp, "prometheus.yml"), "w") as f:
            json.dump(config, f)  # JSON is YAML
        cls.prom = "http://127.0.0.1:%d" % cluster.free_port()
        cls.spawn("prometheus", [
            PROMETHEUS, "--config.file=" + os.path.join(cls.tmp, "prometheus.yml"),
            "--storage.tsdb.path=" + os.path.join(cls.tmp, "tsdb"),
            "--web.listen-address=" + cls.prom[len("http://"):], "--log.level=warn"])
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(cls.prom + "/-/ready", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("Prometheus did not start:\n" + cls.logs())
                time.sleep(0.2)
        cls.load()

    @classmethod
    def load(cls):
        """About 20 seconds of mixed traffic; returns when all of it ended."""
        c = cls.client
        words = "the quick brown fox jumps over the lazy dog while shift switches modes "
        outcomes = []

        def long_request(i):
            return c.generate(text=words * (6 + i % 5), max_tokens=60, ignore_eos=True)

        def short_request(i):
            # With a time-per-output-token target of their own: the steps
            # sized to it feed the step-budget panels.
            return c.generate(text="hello %d" % i, max_tokens=24, ignore_eos=True,
                              tpot_slo_ms=50.0)

        def invalid_request(i):
            try:
                c.generate(text="x", max_tokens=4, top_p=2.0)
            except grpc.RpcError as e:
                return e.code()

        def cancelled_request(i):
            call = c.generate_stream(text=words * 3, max_tokens=200, ignore_eos=True)
            for n, _ in enumerate(call):
                if n == 3:
                    call.cancel()
                    break
            return "cancelled"

        cls.load_start = time.time()
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            futures = []
            while time.time() - cls.load_start < 20:
                for i in range(4):
                    futures.append(pool.submit(long_request, i))
                    futures.append(pool.submit(short_request, i))
                futures.append(pool.submit(invalid_request, 0))
                futures.append(pool.submit(cancelled_request, 0))
                time.sleep(1.0)
            for f in futures:
                try:
                    outcomes.append(f.result(timeout=120))
                except grpc.RpcError as e:
                    outcomes.append(e.code())
        cls.load_end = time.time()
        cls.outcomes = outcomes
        time.sleep(6)  # the last scrapes and rule evaluations

    @classmethod
    def spawn(cls, name, args, env=None):
        log = open(os.path.join(cls.tmp, name + ".log"), "w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        cls.procs.append(proc)
        return proc

    @classmethod
    def logs(cls):
        return "\n".join("== %s\n%s" % (p, cluster.read(p))
                         for p in sorted(glob.glob(os.path.join(cls.tmp, "*.log"))))

    @classmethod
    def tearDownClass(cls):
        for proc in cls.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in cls.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def query(self, expr, at):
        url = "%s/api/v1/query?%s" % (self.prom, urllib.parse.urlencode({"query": expr,
                                                                         "time": "%.3f" % at}))
        body = get_json(url)
        self.assertEqual(body["status"], "success", expr)
        return body["data"]["result"]

    def test_01_the_load_ran_both_modes_errors_cancellations_and_preemptions(self):
        text = cluster.http_get(self.router_metrics)
        steps = {m: cluster.metric(text, 'shift_steps_total{group="0",mode="%s"}' % m)
                 for m in ("tp", "sp")}
        self.assertGreater(steps["tp"] or 0, 0, text)
        self.assertGreater(steps["sp"] or 0, 0, text)
        self.assertGreater(cluster.metric(text, "shift_preemptions_total") or 0, 0,
                           "no preemption: " + text)
        self.assertGreater(
            cluster.metric(text, 'shift_request_errors_total{code="INVALID_ARGUMENT"}') or 0, 0)
        self.assertGreater(cluster.metric(text, 'shift_request_errors_total{code="CANCELLED"}')
                           or 0, 0)
        self.assertIn(grpc.StatusCode.INVALID_ARGUMENT, self.outcomes)

    def test_02_every_panel_expression_returns_data_under_each_variable(self):
        at = self.load_end - 1
        names = set(get_json(self.prom + "/api/v1/label/__name__/values")["data"])
        missing = []
        for dashboard, title, expr in dashboard_expressions():
            for metric in re.findall(r"\b(shift_[a-z0-9_]+)", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", metric)
                if metric not in names and base + "_bucket" not in names:
                    missing.append("%s / %s: %s" % (dashboard, title, metric))
        self.assertEqual(missing, [], "panels name metrics that do not exist")
        # Each variable's values, as its query finds them with the others All.
        variables = dashboard_variables()
        self.assertEqual(set(variables), {"namespace", "job", "model", "group"})
        found = {}
        for name, (selector, label) in variables.items():
            series = self.query(substitute(selector, {}), at)
            found[name] = sorted({s["metric"][label] for s in series if label in s["metric"]})
        self.assertEqual(found["namespace"], [NAMESPACE])
        self.assertEqual(found["job"], [JOB])
        self.assertEqual(found["model"], ["model"])
        self.assertEqual(found["group"], ["0"])
        settings = [{}] + [{name: value} for name, values in found.items() for value in values]
        empty = []
        for values in settings:
            for dashboard, title, expr in dashboard_expressions():
                concrete = substitute(expr, values)
                if not self.query(concrete, at):
                    empty.append("%s / %s under %s: %s" % (dashboard, title, values, concrete))
        self.assertEqual(empty, [], "panel expressions without data")
        # A value no series has leaves the scoped panels empty: each one is
        # scoped by the variable (checked on one panel per variable).
        for name in found:
            expr = next(e for _, _, e in dashboard_expressions()
                        if "$" + name in e and "shift_steps_total" in e)
            self.assertEqual(self.query(substitute(expr, {name: "no-such-value"}), at), [], expr)

    def test_02b_the_mode_panel_shows_sp_after_sp_steps(self):
        # shift_mode is shift.v1.Mode's number (1 TP, 2 SP) and the panel's
        # value mapping says so. Over the load, which ran SP steps, the panel
        # showed SP at some scrape, and never a value outside the mapping
        # (which mode a scrape catches is the last step's: TP may or may not
        # be caught).
        expr = next(e for _, title, e in dashboard_expressions() if title == "Mode over time")
        url = "%s/api/v1/query_range?%s" % (self.prom, urllib.parse.urlencode({
            "query": substitute(expr, {}), "start": "%.3f" % self.load_start,
            "end": "%.3f" % self.load_end, "step": "1"}))
        body = get_json(url)
        self.assertEqual(body["status"], "success", expr)
        shown = {float(v) for series in body["data"]["result"] for _, v in series["values"]}
        self.assertIn(2.0, shown)
        self.assertLessEqual(shown, {1.0, 2.0})
        with open(os.path.join(K8S, "grafana", "shift.json")) as f:
            panel = next(p for p in json.load(f)["panels"] if p["title"] == "Mode over time")
        mapped = json.dumps(panel["fieldConfig"])
        self.assertRegex(mapped, r'"1": \{"text": "TP"')
        self.assertRegex(mapped, r'"2": \{"text": "SP"')

    def test_03_rules_evaluate_and_recordings_have_data(self):
        groups = get_json(self.prom + "/api/v1/rules")["data"]["groups"]
        seen = {"recording": 0, "alerting": 0}
        for group in groups:
            for rule in group["rules"]:
                seen[rule["type"]] += 1
                self.assertEqual(rule["health"], "ok", rule)
                self.assertFalse(rule["lastEvaluation"].startswith("0001"), rule)
                if rule["type"] == "recording":
                    self.assertTrue(self.query(rule["name"], self.load_end), rule["name"])
        self.assertGreaterEqual(seen["recording"], 10)
        self.assertGreaterEqual(seen["alerting"], 5)

    def test_04_the_supervisor_stops_the_group_when_a_rank_dies(self):
        children = subprocess.run(["pgrep", "-P", str(self.supervisor.pid)], capture_output=True,
                                  text=True).stdout.split()
        self.assertEqual(len(children), 2, self.logs())
        os.kill(int(children[1]), signal.SIGKILL)
        self.assertNotEqual(self.supervisor.wait(timeout=30), 0)
        for pid in children:
            self.assertFalse(os.path.exists("/proc/%s" % pid) and
                             "zombie" not in open("/proc/%s/status" % pid).read().lower(),
                             "rank %s still runs" % pid)
        deadline = time.time() + 30
        while cluster.metric(cluster.http_get(self.router_metrics),
                             'shift_group_in_service{group="0"}') != 0:
            self.assertLess(time.time(), deadline, "the group stayed in service")
            time.sleep(0.2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
