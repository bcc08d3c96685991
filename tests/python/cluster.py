"""Processes for end-to-end tests: a shift-router with its worker groups on
127.0.0.1, the single-rank reference (shift-generate), and /metrics
helpers. Every process a Cluster starts is stopped by stop(), and killed if
it does not exit in time."""

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                                "python"))
import shift_client  # noqa: E402

BIN = os.environ.get("SHIFT_BINARY_DIR", "build")
ROUTER = os.path.join(BIN, "router", "shift-router")
WORKER = os.path.join(BIN, "worker", "shift-worker")
MKMODEL = os.path.join(BIN, "tools", "shift-mkmodel")
GENERATE = os.path.join(BIN, "tools", "shift-generate")
SIM = os.path.join(BIN, "tools", "shift-sim")
PROMTOOL = "/usr/bin/promtool"


def read(path):
    with open(path) as f:
        return f.read()


def metric(text, series):
    """The value of `series` (name or name{a="x",...}) in a text exposition:
    the sum over the samples of that name that have at least those labels
    (a router's series also carry model_name and most a group); None when
    there is none."""
    name, _, labels = series.partition("{")
    wanted = set(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
    total, found = 0.0, False
    for m in re.finditer(r"^" + re.escape(name) + r"(?:\{(.*)\})? (\S+)$", text, re.M):
        have = set(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if wanted <= have:
            total, found = total + float(m.group(2)), True
    return total if found else None


def rss_mib(pid):
    """A process's resident memory in MiB (VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def http_get(address):
    with urllib.request.urlopen("http://%s/metrics" % address, timeout=10) as r:
        return r.read().decode()


def free_port():
    """A port free now, below the kernel's range for outgoing connections,
    so that a process restarted on it (a router brought back on its port)
    cannot find it taken by some client's connection meanwhile."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(min(10000, low - 1000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below %d" % low)


def make_model(directory, seed=7, extra=()):
    """A generated model (the tiny preset, with `extra` shift-mkmodel flags)."""
    subprocess.run([MKMODEL, "--preset=tiny", "--seed=%d" % seed, "--out=" + directory] +
                   list(extra), check=True, capture_output=True, timeout=300)
    return directory


def reference_ids(model, prompt, max_tokens, ignore_eos=False):
    """Greedy token ids from the single-rank engine; `prompt` is text or ids."""
    given = ("--prompt=" + prompt if isinstance(prompt, str)
             else "--prompt_ids=" + ",".join(map(str, prompt)))
    out = subprocess.run(
        [GENERATE, "--model=" + model, given, "--max_tokens=%d" % max_tokens,
         "--print_ids", "--threads=1", "--ignore_eos=%s" % ("true" if ignore_eos else "false")],
        check=True, capture_output=True, text=True, timeout=120)
    return [int(t) for t in out.stdout.split()]


class Cluster:
    """A router and `groups` worker groups of `world_size` ranks."""

    def __init__(self, tmp, name, model, world_size, router_flags=(), worker_flags=(),
                 groups=1, port=0, internal_port=0, client_options=None, router_model=None,
                 start_ranks=True):
        self.tmp, self.name, self.model = tmp, name, model
        # The router's --model: the ranks' directory unless given (it reads
        # only config.json, generation_config.json and the tokenizer files).
        self.router_model = router_model or model
        self.world_size, self.groups = world_size, groups
        self.router_flags, self.worker_flags = list(router_flags), list(worker_flags)
        self.procs = []
        # shift_client.Client's TLS and API key arguments, for a secured router.
        self.client_options = dict(client_options or {})
        self.logs = []
        self.ranks = {}  # (group, rank) -> process
        self.start_router(port, internal_port)
        if not start_ranks:  # the caller starts them
            return
        for g in range(groups):
            for r in range(world_size):
                self.start_rank(g, r)
        self.wait_ready(list(range(groups)))

    def start_router(self, port=0, internal_port=0):
        ports = os.path.join(self.tmp, self.name + ".ports")
        if os.path.exists(ports):
            os.remove(ports)
        self.router = self._spawn(self.name + "-router", [
            ROUTER, "--model=" + self.router_model, "--host=127.0.0.1", "--port=%d" % port,
            "--internal_port=%d" % internal_port,
            "--metrics_port=0", "--ports_file=" + ports, "--world_size=%d" % self.world_size,
            "--groups=%d" % self.groups] + self.router_flags)
        deadline = time.time() + 30
        while not (os.path.exists(ports) and read(ports).endswith("\n")):
            if time.time() > deadline or self.router.poll() is not None:
                raise RuntimeError("the router did not start:\n" + read(self.logs[-1]))
            time.sleep(0.05)
        fields = dict(kv.split("=") for kv in read(ports).split())
        self.port = int(fields["grpc"])
        self.address = "127.0.0.1:%d" % self.port
        self.internal_port = int(fields["internal"])
        self.internal_address = "127.0.0.1:%d" % self.internal_port
        self.metrics_address = "127.0.0.1:" + fields["metrics"]
        self.http_port = int(fields.get("http", "-1"))  # with --http_port
        self.client = shift_client.Client(self.address, **self.client_options)

    def start_rank(self, group, rank):
        self.ranks[(group, rank)] = self._spawn(
            "%s-g%d-r%d" % (self.name, group, rank),
            [WORKER, "--router=" + self.internal_address, "--group=%d" % group, "--rank=%d" % rank,
             "--world_size=%d" % self.world_size, "--model=" + self.model, "--threads=1"] +
            self.worker_flags)

    def wait_ready(self, groups, timeout=60):
        deadline = time.time() + timeout
        while True:
            status = self.client.status()["groups"]
            if all(status[g]["ready"] for g in groups):
                return
            if time.time() > deadline:
                raise RuntimeError("groups %s did not form:\n%s" % (groups, self.all_logs()))
            time.sleep(0.05)

    def metrics(self):
        return http_get(self.metrics_address)

    def assert_idle(self, test, timeout=20):
        """Waits until group 0 runs no request; then no KV block may be in
        use (asserted through the unittest.TestCase `test`)."""
        deadline = time.time() + timeout
        while True:
            g = self.client.status()["groups"][0]
            if g["running_sequences"] == 0 or time.time() > deadline:
                break
            time.sleep(0.05)
        test.assertEqual(g["running_sequences"], 0)
        test.assertEqual(g["kv_blocks_used"], 0, "KV blocks leaked")

    def _spawn(self, name, args):
        path = os.path.join(self.tmp, name + ".log")
        self.logs.append(path)
        with open(path, "a") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def all_logs(self):
        return "\n".join("== %s\n%s" % (p, read(p)) for p in self.logs)

    def stop(self, timeout=15):
        """SIGTERM to the router (it drains and exits; its ranks stay, waiting
        for the next router), then to every rank; returns the exit codes of
        the processes still running then. Anything alive after `timeout` s
        is killed."""
        if self.router.poll() is None:
            self.router.send_signal(signal.SIGTERM)
            try:
                self.router.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            if proc is not self.router and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            if proc.returncode is not None and proc is not self.router:
                continue  # ended earlier (killed by a test)
            try:
                codes.append(proc.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes.append("killed")
        return codes
