#!/usr/bin/env python3
"""shift's image, built and run with podman (ctest's deploy_container_test).

- A Debian 12 base image made with `mmdebstrap --variant=minbase bookworm`
  from this machine's apt sources and `podman import`ed (kept as
  localhost/shift-test-debian12 and reused; no registry is reached: every
  build uses --pull=never).
- deploy/docker/Dockerfile's runtime stage built on it (--target runtime:
  the shared libraries, the user, shift-supervisor), then the binaries of
  this build added to it as the Dockerfile's last stage adds its own
  (with libcudart when the build has CUDA), so the test needs no second
  compilation. The multi-stage build is checked by hand (README).
- In containers from that image, with --network=host, a read-only root
  and no capabilities as the chart runs them: a router, and one worker
  group of two CPU ranks under shift-supervisor. A Generate through the
  python client and through the image's shiftctl, health on the router's
  ports and rank 0's, /metrics of the router and both ranks, every process
  running as uid 10001; SIGTERM then drains the router (exit 0) while the
  group keeps running (its weights loaded, waiting for the next router),
  and SIGTERM to the group's container stops its ranks (exit 0).

podman runs with deploy/docker/tests/containers.conf (runc, cgroupfs,
nofile and nproc limits the CI machines accept).
SHIFT_CONTAINER_TEST_IMAGE=NAME runs the checks on an image built elsewhere
(the whole multi-stage build, say). Without podman, mmdebstrap or root the
test skips (ctest: Skipped), saying what is missing, unless
SHIFT_CONTAINER_TEST=required (tools/test sets it where it installs them):
then it fails.
"""
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import cluster  # noqa: E402
import shift_client  # noqa: E402  (on the path through cluster)

SKIP = 77  # ctest's SKIP_RETURN_CODE for this test
BASE = "localhost/shift-test-debian12"
RUNTIME = "localhost/shift-test-runtime"
TAG = "localhost/shift-test:%d" % os.getpid()
SHIFTCTL = os.path.join(cluster.BIN, "tools", "shiftctl")
ENV = dict(os.environ, CONTAINERS_CONF=os.path.join(HERE, "containers.conf"))


def run(args, timeout=600, check=True, **kw):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV, **kw)
    if check and out.returncode != 0:
        raise RuntimeError("%s exited with %d:\n%s%s" % (" ".join(args), out.returncode,
                                                         out.stdout[-4000:], out.stderr[-4000:]))
    return out


def missing():
    """Why the test cannot run here, or None."""
    for tool in ("podman", "runc", "mmdebstrap"):
        if not shutil.which(tool):
            return "%s is not installed (tools/setup-deps with SHIFT_SETUP_CONTAINERS=1)" % tool
    if os.geteuid() != 0:
        return "podman needs root here (rootless podman needs subordinate ids and a user session)"
    for path in (cluster.ROUTER, cluster.WORKER, cluster.MKMODEL, SHIFTCTL):
        if not os.access(path, os.X_OK):
            return "%s is not built" % path
    info = run(["podman", "info"], check=False)
    if info.returncode != 0:
        return "podman info fails: " + info.stderr.strip()[-2000:]
    return None


def apt_sources():
    """This machine's apt source files that name bookworm: mmdebstrap pastes
    them into the base image, which then uses the same mirror."""
    files = ["/etc/apt/sources.list"] + sorted(
        glob.glob("/etc/apt/sources.list.d/*.list") + glob.glob("/etc/apt/sources.list.d/*.sources"))
    return [f for f in files if os.path.isfile(f) and "bookworm" in cluster.read(f)]


def cuda_libraries(binary):
    """Paths of the CUDA runtime libraries `binary` links (a CUDA build)."""
    out = run(["ldd", binary]).stdout
    return [line.split("=>")[1].split()[0] for line in out.splitlines()
            if "libcudart" in line and "=>" in line]


class ContainerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-container-")
        os.chmod(cls.tmp, 0o755)  # the containers' user reads the model
        cls.containers = []
        cls.timings = {}
        cls.image = None
        try:
            cls.build_images()
            cls.start_processes()
        except BaseException:
            cls.tearDownClass()  # unittest does not when setUpClass fails
            raise

    @classmethod
    def start_processes(cls):
        cls.model = cluster.make_model(os.path.join(cls.tmp, "model"))
        # The internal token, as the chart mounts its Secret: the
        # containers' user reads it, nobody else.
        cls.token = os.path.join(cls.tmp, "internal-token")
        with open(cls.token, "w") as f:
            f.write("the-container-test-token-0123456789\n")
        os.chown(cls.token, 10001, 10001)
        os.chmod(cls.token, 0o400)
        token_flag = "--internal_token_file=/etc/shift/internal-token"
        base = free_ports(8)
        cls.port, cls.internal, cls.health, cls.metrics = range(base, base + 4)
        cls.rank_health, cls.rank_metrics = base + 4, base + 6  # 2 ranks each
        started = time.time()
        cls.router = cls.start("router", [
            "shift-router", "--model=/model", "--model_name=tiny", "--host=127.0.0.1",
            "--port=%d" % cls.port, "--internal_port=%d" % cls.internal,
            "--health_port=%d" % cls.health, "--metrics_port=%d" % cls.metrics,
            "--world_size=2", "--groups=1", "--drain_timeout_s=10", token_flag])
        cls.group = cls.start("group", [
            "shift-supervisor", "--router=127.0.0.1:%d" % cls.internal, "--model=/model",
            "--device=cpu", "--threads=1", "--kv_cache_bytes=4194304", token_flag],
            env={"SHIFT_WORLD_SIZE": "2", "POD_IP": "127.0.0.1",
                 "SHIFT_HEALTH_PORT": str(cls.rank_health),
                 "SHIFT_METRICS_PORT": str(cls.rank_metrics), "SHIFT_STOP_TIMEOUT_S": "10"})
        cls.client = shift_client.Client("127.0.0.1:%d" % cls.port)
        deadline = time.time() + 120
        while True:
            try:
                if cls.client.status()["groups"][0]["ready"]:
                    break
            except Exception:  # the router is still starting
                pass
            exited = [c for c in cls.containers if not cls.running(c)]
            if exited or time.time() > deadline:
                raise RuntimeError("the group did not form (exited: %s):\n%s" %
                                   (exited, cls.logs()))
            time.sleep(0.2)
        cls.timings["start and form the group"] = time.time() - started

    @classmethod
    def build_images(cls):
        cls.image = os.environ.get("SHIFT_CONTAINER_TEST_IMAGE")
        if cls.image:
            return
        cls.image = TAG
        started = time.time()
        if run(["podman", "image", "exists", BASE], check=False).returncode != 0:
            sources = apt_sources()
            assert sources, "no apt source in /etc/apt names bookworm"
            tarball = os.path.join(cls.tmp, "base.tar")
            run(["mmdebstrap", "--variant=minbase", "bookworm", tarball] + sources)
            run(["podman", "import", tarball, BASE])
            os.remove(tarball)
            cls.timings["mmdebstrap and import"] = time.time() - started
        started = time.time()
        run(["podman", "build", "--pull=never", "--network=host", "-f",
             os.path.join(ROOT, "deploy", "docker", "Dockerfile"), "--target", "runtime",
             "--build-arg", "RUNTIME_BASE=" + BASE, "-t", RUNTIME, ROOT])
        cls.timings["runtime stage"] = time.time() - started
        # The Dockerfile's last stage, over this build's binaries.
        started = time.time()
        context = os.path.join(cls.tmp, "context")
        os.mkdir(context)
        for path in (cluster.ROUTER, cluster.WORKER, SHIFTCTL):
            run(["strip", "-o", os.path.join(context, os.path.basename(path)), path])
        libs = sorted(set(cuda_libraries(cluster.ROUTER) + cuda_libraries(cluster.WORKER)))
        os.mkdir(os.path.join(context, "lib"))
        for lib in libs:
            shutil.copy(lib, os.path.join(context, "lib", os.path.basename(lib)))
        with open(os.path.join(context, "Containerfile"), "w") as f:
            f.write("FROM %s\nUSER root\n"
                    "COPY shift-router shift-worker shiftctl /usr/local/bin/\n"
                    "COPY lib/ /usr/local/lib/\nRUN ldconfig\nUSER 10001:10001\n" % RUNTIME)
        run(["podman", "build", "--pull=never", "--network=host", "-t", TAG, context])
        cls.timings["image with this build's binaries"] = time.time() - started

    @classmethod
    def start(cls, name, command, env=None):
        name = "shift-test-%s-%d" % (name, os.getpid())
        args = ["podman", "run", "-d", "--name", name, "--network=host", "--read-only",
                "--cap-drop=ALL", "--security-opt=no-new-privileges", "--shm-size=256m",
                "-v", "%s:/model:ro" % cls.model,
                "-v", "%s:/etc/shift/internal-token:ro" % cls.token]
        for key, value in (env or {}).items():
            args += ["-e", "%s=%s" % (key, value)]
        run(args + [cls.image] + command)
        cls.containers.append(name)
        return name

    @classmethod
    def running(cls, name):
        out = run(["podman", "inspect", "--format", "{{.State.Running}}", name])
        return out.stdout.strip() == "true"

    @classmethod
    def logs(cls):
        parts = []
        for name in cls.containers:
            out = run(["podman", "logs", name], check=False)
            parts.append("== %s\n%s%s" % (name, out.stdout, out.stderr))
        return "\n".join(parts)

    @classmethod
    def tearDownClass(cls):
        for name in cls.containers:
            run(["podman", "rm", "-f", "-t", "5", name], check=False)
        if cls.image == TAG:
            run(["podman", "rmi", "-f", TAG], check=False)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        for step, seconds in cls.timings.items():
            print("container_test: %s: %.1f s" % (step, seconds), file=sys.stderr)

    def test_1_generate_through_the_image(self):
        ids, text, final, _ = self.client.generate(text="The lighthouse keeper", max_tokens=8,
                                                   temperature=0.0, ignore_eos=True)
        self.assertEqual(len(ids), 8)
        self.assertEqual(self.client.model_info()["name"], "tiny")
        # The image's shiftctl, in the router's container: the same greedy text.
        out = run(["podman", "exec", self.router, "shiftctl", "--address=127.0.0.1:%d" % self.port,
                   "generate", "--prompt=The lighthouse keeper", "--max_tokens=8",
                   "--temperature=0", "--ignore_eos"])
        self.assertIn(text, out.stdout)

    def test_2_health_and_metrics(self):
        self.assertEqual(self.client.health("shift.v1.Generation"), 1)  # SERVING
        router_health = shift_client.Client("127.0.0.1:%d" % self.health)
        self.assertEqual(router_health.health("shift.live"), 1)
        rank0 = shift_client.Client("127.0.0.1:%d" % self.rank_health)
        self.assertEqual(rank0.health("shift.live"), 1)
        self.assertEqual(rank0.health(""), 1)  # the group is formed
        self.client.generate(text="a", max_tokens=2)
        text = cluster.http_get("127.0.0.1:%d" % self.metrics)
        self.assertIn('shift_build_info{', text)
        self.assertRegex(text, r'shift_requests_total\{[^}]*\} [1-9]')
        for r in range(2):
            text = cluster.http_get("127.0.0.1:%d" % (self.rank_metrics + r))
            self.assertRegex(text, r'shift_worker_steps_total\{[^}]*\} [1-9]')

    def test_3_processes_run_as_the_image_user(self):
        for name, count in ((self.router, 1), (self.group, 3)):  # supervisor and 2 ranks
            out = run(["podman", "top", name, "hpid", "user", "args"]).stdout.splitlines()[1:]
            self.assertEqual(len(out), count, out)
            for line in out:
                hpid, user = line.split()[:2]
                self.assertEqual(user, "shift", line)
                with open("/proc/%s/status" % hpid) as f:
                    uids = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
                self.assertEqual(uids, ["10001"] * 4, line)

    def test_4_sigterm_drains_the_router_and_the_group_waits_for_the_next(self):
        run(["podman", "stop", "-t", "30", self.router])
        code = run(["podman", "inspect", "--format", "{{.State.ExitCode}}", self.router])
        self.assertEqual(code.stdout.strip(), "0", self.logs())
        time.sleep(3)
        self.assertTrue(self.running(self.group), "the group exited with the router: " +
                        self.logs())
        run(["podman", "stop", "-t", "30", self.group])
        code = run(["podman", "inspect", "--format", "{{.State.ExitCode}}", self.group])
        self.assertEqual(code.stdout.strip(), "0", self.logs())


def free_ports(n):
    """A base port with n free ports after it."""
    for _ in range(100):
        base = cluster.free_port()
        if base + n < 65535 and all(port_free(p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no %d consecutive free ports" % n)


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


if __name__ == "__main__":
    reason = missing()
    if reason:
        if os.environ.get("SHIFT_CONTAINER_TEST") == "required":
            print("container_test: cannot run, and SHIFT_CONTAINER_TEST=required: " + reason,
                  file=sys.stderr)
            sys.exit(1)
        print("container_test: skipped: " + reason)
        sys.exit(SKIP)
    unittest.main(verbosity=2)
