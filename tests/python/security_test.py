"""The trust boundary of shift-router, attacked from outside on 127.0.0.1.

  - With default flags: the public port serves no internal service (a fake
    rank gets UNIMPLEMENTED, reflection does not list them), the internal
    port is a second port on 127.0.0.1 that answers only calls carrying the
    token the router wrote (0600), and a rank whose weights differ (same
    config.json) is refused.
  - With TLS, mutual TLS on the internal port and API keys (a throwaway CA
    and certificates made with openssl here): the Python client, shiftctl
    and shift-bench work end to end; plaintext, keyless, wrong-key and
    certificate-less calls get clear statuses; health stays open, also on a
    plaintext health-only port; a certificate and a key file rotated on disk
    are picked up without a restart; tenants never share prefix-cache
    blocks.
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import (WORKER, Cluster, http_get, make_model, metric, read,  # noqa: E402
                     reference_ids, rss_mib)
import raw_http2  # noqa: E402
import shift_client  # noqa: E402  (on the path through cluster)

BIN = os.environ.get("SHIFT_BINARY_DIR", "build")
PROMPT = "The lighthouse keeper watched the sea"
KEY = "k3y-for-tenant-a-0123456789"
OTHER_KEY = "k3y-for-tenant-b-9876543210"
ROTATED_KEY = "k3y-rotated-in-later-000000"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True,
                   timeout=60)


class Pki:
    """A CA, the router's certificate (127.0.0.1), a rank's client
    certificate, and a rogue CA with a certificate of its own."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        with open(self.path("ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        self.ca("ca")
        self.ca("rogue-ca")
        self.issue("router", "ca", "shift-router")
        self.issue("rank", "ca", "shift-rank")
        self.issue("rogue", "rogue-ca", "shift-rank")

    def path(self, name):
        return os.path.join(self.dir, name)

    def pem(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def ca(self, name):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
                "-subj", "/CN=" + name, cwd=self.dir)

    def issue(self, name, ca, common_name, out=None):
        """Signs a new key for `common_name`; writes out.pem and out.key."""
        out = out or name
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", name + ".key.new", "-out", name + ".csr", "-subj", "/CN=" + common_name,
                cwd=self.dir)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-CAcreateserial", "-out", name + ".pem.new", "-days", "2", "-extfile", "ext.cnf",
                cwd=self.dir)
        # Key and certificate change together, as a rotation would.
        os.replace(self.path(name + ".key.new"), self.path(out + ".key"))
        os.replace(self.path(name + ".pem.new"), self.path(out + ".pem"))


def presented_common_name(port, ca):
    """The CN of the certificate the server on `port` presents now."""
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(x[0] for x in tls.getpeercert()["subject"])
            return subject["commonName"]


def code_of(call):
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


class DefaultFlagsTest(unittest.TestCase):
    """A router started with its default trust settings (plaintext)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-security-")
        cls.model = make_model(os.path.join(cls.tmp, "model"))
        # The router writes the token there (the file does not exist yet).
        cls.token_file = os.path.join(cls.tmp, "state", "internal_token")
        token_flag = "--internal_token_file=" + cls.token_file
        cls.cluster = Cluster(cls.tmp, "plain", cls.model, 1, router_flags=[token_flag],
                              worker_flags=[token_flag])

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_a_fake_rank_on_the_public_port_gets_unimplemented(self):
        c = self.cluster
        want = reference_ids(self.model, PROMPT, 16, ignore_eos=True)
        channel = grpc.insecure_channel(c.address)
        connect = channel.stream_stream("/shift.v1.internal.Worker/Connect")
        with self.assertRaises(grpc.RpcError) as e:
            for _ in connect(iter([b""]), timeout=10):
                pass
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        store_set = channel.unary_unary("/shift.v1.internal.Rendezvous/Set")
        self.assertEqual(code_of(lambda: store_set(b"", timeout=10))[0],
                         grpc.StatusCode.UNIMPLEMENTED)
        services = c.client.list_services()
        self.assertIn("shift.v1.Generation", services)
        self.assertFalse([s for s in services if "internal" in s], services)
        # Nor does reflection describe internal.proto when asked for one of
        # its symbols or its file by name: the answer a symbol that does not
        # exist gets (error_response, 7), where the public file is described.
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")

        def ask(field, text):
            for raw in reflect(iter([shift_client._len(field, text.encode())]), timeout=10):
                return shift_client.parse(raw)
        self.assertIn(4, ask(4, "shift.v1.Generation"))  # file_descriptor_response
        for field, text in ((4, "shift.v1.internal.Worker"), (4, "shift.v1.internal.StepPlan"),
                            (3, "shift/v1/internal.proto"), (4, "no.such.Symbol")):
            answer = ask(field, text)
            self.assertNotIn(4, answer, text)
            self.assertIn(7, answer, text)
        # The internal port is another port, and it is on 127.0.0.1.
        self.assertNotEqual(c.internal_port, c.port)
        # Outputs are untouched by the attempts.
        self.assertEqual(c.client.generate(text=PROMPT, max_tokens=16, ignore_eos=True)[0], want)


    def test_a_rank_with_the_same_config_but_other_weights_is_refused(self):
        c = self.cluster
        other = make_model(os.path.join(self.tmp, "other-weights"), seed=8)
        self.assertEqual(read(os.path.join(other, "config.json")),
                         read(os.path.join(self.model, "config.json")))
        impostor = subprocess.run(
            [os.path.join(BIN, "worker", "shift-worker"), "--router=" + c.internal_address,
             "--model=" + other, "--threads=1", "--reconnect_timeout_s=5",
             "--internal_token_file=" + self.token_file],
            capture_output=True, text=True, timeout=120)
        self.assertNotEqual(impostor.returncode, 0)
        # Named by the first tensor whose bytes differ from the serving rank's.
        self.assertRegex(impostor.stderr,
                         r"tensor \S+ differs from group 0 rank 0's \(bytes 0\.\.\d+\)")
        want = reference_ids(self.model, PROMPT, 16, ignore_eos=True)
        self.assertEqual(c.client.generate(text=PROMPT, max_tokens=16, ignore_eos=True)[0], want)


    def test_the_internal_port_needs_the_deployments_token(self):
        c = self.cluster
        # Written by the router, for its owner alone.
        self.assertEqual(os.stat(self.token_file).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(self.token_file)).st_mode & 0o777, 0o700)
        token = read(self.token_file).strip()
        self.assertRegex(token, r"^[0-9a-f]{64}$")
        channel = grpc.insecure_channel(c.internal_address)
        connect = channel.stream_stream("/shift.v1.internal.Worker/Connect")
        calls = {"Connect": lambda md: list(connect(iter([b""]), timeout=10, metadata=md))}
        for method in ("Set", "Get", "Add", "Check"):
            stub = channel.unary_unary("/shift.v1.internal.Rendezvous/" + method)
            calls[method] = lambda md, stub=stub: stub(b"", timeout=10, metadata=md)
        wrong = (("x-shift-internal-token", "0" + token[1:] if token[0] != "0" else "1" + token[1:]),)
        for name, call in calls.items():
            for metadata in (None, wrong):
                code, details = code_of(lambda: call(metadata))
                # One answer, whatever else is wrong with the call.
                self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, name)
                self.assertEqual(details, "the internal port needs the deployment's internal "
                                 "token (--internal_token_file)", name)
        # With the token, a call reaches the store (which judges it on its own terms).
        code, _ = code_of(lambda: calls["Check"]((("x-shift-internal-token", token),)))
        self.assertNotEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        # A rank with another deployment's token exits saying why.
        other = os.path.join(self.tmp, "other-token")
        with open(other, "w") as f:
            f.write("another-deployments-token-0123456789\n")
        os.chmod(other, 0o600)
        rank = subprocess.run(
            [WORKER, "--router=" + c.internal_address, "--model=" + self.model, "--threads=1",
             "--reconnect_timeout_s=5", "--internal_token_file=" + other],
            capture_output=True, text=True, timeout=120)
        self.assertNotEqual(rank.returncode, 0)
        self.assertIn("refused this rank: the internal port needs the deployment's internal token",
                      rank.stderr)
        want = reference_ids(self.model, PROMPT, 16, ignore_eos=True)
        self.assertEqual(c.client.generate(text=PROMPT, max_tokens=16, ignore_eos=True)[0], want)

    def test_the_rendezvous_answers_only_the_ranks_of_its_generation(self):
        # A holder of the internal token that is not a rank the router
        # welcomed into the current generation can neither read nor replace
        # what the ranks publish (it could overwrite a rank's address).
        c = self.cluster
        token = read(self.token_file).strip()
        generation = c.client.status()["groups"][0]["generation"]
        self.assertGreater(generation, 0)
        channel = grpc.insecure_channel(c.internal_address)
        k, v, ln = shift_client._key, shift_client._varint, shift_client._len
        for ticket in (b"", b"0123456789abcdef0123456789abcdef"):
            scope = ln(1, k(1, 0) + v(0) + k(2, 0) + v(generation) + ln(3, ticket))
            bodies = {"Set": scope + ln(2, b"comm/0") + ln(3, b"poison"),
                      "Get": scope + ln(2, b"comm/0"),
                      "Check": scope + ln(2, b"comm/0"),
                      "Add": scope + ln(2, b"counter") + k(3, 0) + v(1)}
            for method, body in bodies.items():
                stub = channel.unary_unary("/shift.v1.internal.Rendezvous/" + method)
                code, details = code_of(lambda: stub(
                    body, timeout=10, metadata=(("x-shift-internal-token", token),)))
                self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, (method, ticket))
                self.assertIn("answers only its ranks", details)
        channel.close()
        want = reference_ids(self.model, PROMPT, 16, ignore_eos=True)
        self.assertEqual(c.client.generate(text=PROMPT, max_tokens=16, ignore_eos=True)[0], want)

    def test_idle_connections_do_not_block_metrics(self):
        # Two idle TCP connections used to take both of /metrics' threads
        # for 30 s; the router's and the ranks' servers now have more threads
        # and close a connection that sends nothing within 2 s.
        c = self.cluster
        addresses = [c.metrics_address] + [
            r["metrics_address"] for r in c.client.status()["groups"][0]["ranks"]]
        for address in addresses:
            host, port = address.split(":")
            idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(4)]
            try:
                start = time.time()
                self.assertIn("# TYPE", http_get(address))
                self.assertLess(time.time() - start, 5, address)
            finally:
                for s in idle:
                    s.close()


class StreamBoundsTest(unittest.TestCase):
    """A client that never reads, or opens more streams than allowed, over
    one raw HTTP/2 connection to the public port."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-streams-")
        cls.model = make_model(os.path.join(cls.tmp, "model"))
        cls.cluster = Cluster(cls.tmp, "bounds", cls.model, 1, router_flags=[
            "--stalled_stream_timeout_s=1", "--max_undelivered_deltas=2"])
        cls.request = shift_client.encode_generate_request(text=PROMPT, max_tokens=400,
                                                           ignore_eos=True)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_a_stalled_stream_is_cancelled_outright(self):
        # A receive window of zero: nothing generated can be sent. After the
        # stall timeout each call ends at once (RST_STREAM), without waiting
        # behind a write that flow control blocks forever, which held the
        # call's memory for as long as the connection lived.
        c = self.cluster
        conn = raw_http2.Connection(c.address, initial_window=0)
        try:
            streams = {1, 3, 5}
            for stream in sorted(streams):
                conn.open(stream, b"/shift.v1.Generation/Generate", self.request)
            ended = set()
            for kind, flags, stream, _ in conn.frames(30):
                if kind == raw_http2.RST_STREAM or (kind == raw_http2.HEADERS and flags & 0x1):
                    ended.add(stream)
                if ended >= streams:
                    break
            self.assertEqual(ended & streams, streams)
        finally:
            conn.close()
        deadline = time.time() + 10
        while metric(c.metrics(), "shift_running_sequences") != 0:
            self.assertLess(time.time(), deadline, "the stalled requests kept their KV blocks")
            time.sleep(0.1)
        self.assertEqual(c.client.generate(text=PROMPT, max_tokens=8, ignore_eos=True)[0],
                         reference_ids(self.model, PROMPT, 8, ignore_eos=True))

    def test_streams_per_connection_are_bounded(self):
        # A router of its own, without the class's 1 s stall timeout: readers
        # slowed by a loaded machine must not be taken for stalled ones.
        c = Cluster(self.tmp, "streams", self.model, 1,
                    router_flags=["--max_streams_per_connection=4"])
        self.addCleanup(c.stop)
        # The server announces --max_streams_per_connection ...
        conn = raw_http2.Connection(c.address)
        try:
            conn.handshake()
            self.assertEqual(
                conn.server_settings.get(raw_http2.SETTINGS_MAX_CONCURRENT_STREAMS), 4)
        finally:
            conn.close()
        # ... and one connection runs at most that many calls at once: six
        # long calls over one channel, never more than four running.
        channel = grpc.insecure_channel(c.address)
        generate = channel.unary_stream("/shift.v1.Generation/Generate")
        request = shift_client.encode_generate_request(text=PROMPT, max_tokens=1500,
                                                       ignore_eos=True)
        calls = [generate(request, timeout=120) for _ in range(6)]
        readers = [threading.Thread(target=lambda call=call: sum(1 for _ in call))
                   for call in calls]
        for t in readers:
            t.start()
        most = 0
        while any(t.is_alive() for t in readers):
            running = c.client.status()["groups"][0].get("running_sequences", 0)
            most = max(most, running)
            self.assertLessEqual(running, 4)
            time.sleep(0.02)
        for t in readers:
            t.join()
        channel.close()
        self.assertGreaterEqual(most, 2)
        self.assertEqual([call.code() for call in calls], [grpc.StatusCode.OK] * 6)


class RapidResetTest(unittest.TestCase):
    """HTTP/2 rapid reset against the public port of a two-rank group whose
    ranks are lost after 1 s of silence: the flood holds gRPC's threads for
    seconds, but the group keeps its generation (the ranks' heartbeats wait
    unread, which the router can tell from silence) and the memory the
    flood made gRPC allocate is given back afterwards."""

    def test_a_flood_of_resets_loses_no_rank_and_leaves_no_memory_behind(self):
        tmp = tempfile.mkdtemp(prefix="shift-rapid-")
        model = make_model(os.path.join(tmp, "model"))
        c = Cluster(tmp, "rapid", model, 2, router_flags=["--heartbeat_timeout_s=1"])
        try:
            c.client.generate(text=PROMPT, max_tokens=4)
            generation = c.client.status()["groups"][0]["generation"]
            before = rss_mib(c.router.pid)
            request = shift_client.encode_generate_request(text="hello there", max_tokens=400)
            senders = [threading.Thread(target=raw_http2.rapid_reset, args=(
                c.address, b"/shift.v1.Generation/Generate", request, 18000)) for _ in range(4)]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            # Served again, by the same generation: no rank was lost.
            deadline = time.time() + 60
            while True:
                try:
                    self.assertEqual(
                        c.client.generate(text=PROMPT, max_tokens=8, ignore_eos=True,
                                          timeout=10)[0],
                        reference_ids(model, PROMPT, 8, ignore_eos=True))
                    break
                except grpc.RpcError as e:
                    self.assertLess(time.time(), deadline, e)
                    time.sleep(0.5)
            self.assertNotIn("event=rank_lost", c.all_logs())
            self.assertEqual(c.client.status()["groups"][0]["generation"], generation)
            # The memory comes back (glibc kept it before: 800 MiB and more).
            deadline = time.time() + 60
            while rss_mib(c.router.pid) > before + 100:
                self.assertLess(time.time(), deadline, "router RSS %.0f MiB, %.0f MiB before" % (
                    rss_mib(c.router.pid), before))
                time.sleep(0.5)
        finally:
            c.stop()
            shutil.rmtree(tmp, ignore_errors=True)


class SecuredRouterTest(unittest.TestCase):
    """TLS on both ports, mutual TLS on the internal one, API keys."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-security-")
        cls.model = make_model(os.path.join(cls.tmp, "model"))
        cls.pki = Pki(os.path.join(cls.tmp, "pki"))
        p = cls.pki.path
        cls.keys = os.path.join(cls.tmp, "api-keys")
        with open(cls.keys, "w") as f:
            f.write("# token tenant\n%s tenant-a\n%s\n" % (KEY, OTHER_KEY))
        cls.key_file = os.path.join(cls.tmp, "client-key")
        with open(cls.key_file, "w") as f:
            f.write(KEY + "\n")
        cls.want = reference_ids(cls.model, PROMPT, 16, ignore_eos=True)
        cls.cluster = Cluster(
            cls.tmp, "secure", cls.model, 1,
            router_flags=["--tls_cert=" + p("router.pem"), "--tls_key=" + p("router.key"),
                          "--tls_ca=" + p("ca.pem"), "--api_key_file=" + cls.keys,
                          "--health_port=0"],
            worker_flags=["--tls_ca=" + p("ca.pem"), "--tls_cert=" + p("rank.pem"),
                          "--tls_key=" + p("rank.key")],
            client_options=dict(api_key=KEY, tls_ca=p("ca.pem")))

    @classmethod
    def tearDownClass(cls):
        codes = cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert codes == [0] * len(codes), codes

    def client(self, **options):
        return shift_client.Client(self.cluster.address, **options)

    def test_tls_and_keys_work_and_everything_else_is_refused_clearly(self):
        ca = self.pki.path("ca.pem")
        good = self.client(api_key=KEY, tls_ca=ca)
        self.assertEqual(good.generate(text=PROMPT, max_tokens=16, ignore_eos=True)[0], self.want)
        self.assertEqual(self.client(api_key=OTHER_KEY, tls_ca=ca).status()["groups"][0]["ready"],
                         True)
        before = metric(self.cluster.metrics(), "shift_auth_failures_total")
        for options in (dict(tls_ca=ca), dict(api_key="not-a-key-but-long-enough", tls_ca=ca)):
            c = self.client(**options)
            for call in (lambda: c.generate(text=PROMPT, max_tokens=4), c.status, c.model_info):
                code, details = code_of(call)
                self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, options)
                self.assertIn("API key", details)
        self.assertEqual(metric(self.cluster.metrics(), "shift_auth_failures_total"), before + 6)
        # Plaintext to a TLS port does not get through.
        code, _ = code_of(self.client(api_key=KEY).status)
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        # Health needs no key, on the TLS port and on the plaintext health port.
        self.assertEqual(self.client(tls_ca=ca).health(), 1)
        ports = read(os.path.join(self.tmp, "secure.ports"))
        health_port = int(dict(kv.split("=") for kv in ports.split())["health"])
        plain_health = shift_client.Client("127.0.0.1:%d" % health_port)
        self.assertEqual(plain_health.health(), 1)
        self.assertEqual(plain_health.health("shift.v1.Generation"), 1)
        self.assertEqual(code_of(plain_health.status)[0], grpc.StatusCode.UNIMPLEMENTED)

    def test_tenants_do_not_share_prefix_cache_blocks(self):
        ca = self.pki.path("ca.pem")
        # A prompt no other test sends, long enough for several full blocks.
        prompt = "Tenant isolation: " + "the quick brown fox jumps over the lazy dog " * 4
        a = self.client(api_key=KEY, tls_ca=ca)
        b = self.client(api_key=OTHER_KEY, tls_ca=ca)
        first = a.generate(text=prompt, max_tokens=2, ignore_eos=True)
        self.assertEqual(first[2]["usage"]["cached_prompt_tokens"], 0)
        # The same prompt from another tenant: nothing is served from A's
        # blocks, and B learns nothing of A's prompt.
        other = b.generate(text=prompt, max_tokens=2, ignore_eos=True)
        self.assertEqual(other[2]["usage"]["cached_prompt_tokens"], 0)
        self.assertEqual(other[0], first[0])
        # A itself hits its own blocks.
        again = a.generate(text=prompt, max_tokens=2, ignore_eos=True)
        self.assertGreater(again[2]["usage"]["cached_prompt_tokens"], 0)
        self.assertEqual(again[0], first[0])

    def test_a_rank_without_the_deployments_certificate_is_refused(self):
        p = self.pki.pem
        internal = self.cluster.internal_address
        attempts = {
            "plaintext": grpc.insecure_channel(internal),
            "no client certificate": grpc.secure_channel(
                internal, grpc.ssl_channel_credentials(p("ca.pem"))),
            "a rogue CA's certificate": grpc.secure_channel(
                internal, grpc.ssl_channel_credentials(
                    p("ca.pem"), p("rogue.key"), p("rogue.pem"))),
        }
        for what, channel in attempts.items():
            connect = channel.stream_stream("/shift.v1.internal.Worker/Connect")
            code, _ = code_of(lambda: list(connect(iter([b""]), timeout=10)))
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, what)
            store_get = channel.unary_unary("/shift.v1.internal.Rendezvous/Get")
            self.assertEqual(code_of(lambda: store_get(b"", timeout=10))[0],
                             grpc.StatusCode.UNAVAILABLE, what)
        # The real rank is still there and outputs are unchanged.
        self.assertEqual(self.cluster.client.generate(text=PROMPT, max_tokens=16,
                                                      ignore_eos=True)[0], self.want)

    def test_a_rank_with_a_rogue_certificate_says_why_it_cannot_connect(self):
        # It used to log only "not connected".
        p = self.pki.path
        rank = subprocess.run(
            [WORKER, "--router=" + self.cluster.internal_address, "--group=0", "--rank=0",
             "--world_size=1", "--model=" + self.model, "--threads=1",
             "--tls_ca=" + p("ca.pem"), "--tls_cert=" + p("rogue.pem"),
             "--tls_key=" + p("rogue.key"), "--reconnect_timeout_s=2"],
            capture_output=True, text=True, timeout=60)
        self.assertNotEqual(rank.returncode, 0)
        self.assertIn("cannot reach the router at " + self.cluster.internal_address,
                      rank.stderr)
        self.assertIn("with TLS: the router must trust this rank's --tls_cert", rank.stderr)
        self.assertEqual(rank.stderr.count("reconnecting"), 1, rank.stderr)

    def test_shiftctl_and_shift_bench_speak_tls_and_keys(self):
        ca = self.pki.path("ca.pem")
        ctl = os.path.join(BIN, "tools", "shiftctl")
        base = [ctl, "--address=" + self.cluster.address, "--tls_ca=" + ca]
        out = subprocess.run(base + ["--api_key_file=" + self.key_file, "generate",
                                     "--prompt=" + PROMPT, "--max_tokens=8"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        out = subprocess.run(base + ["status"], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, SHIFT_API_KEY=OTHER_KEY))
        self.assertEqual(out.returncode, 0, out.stderr)
        env = {k: v for k, v in os.environ.items() if k != "SHIFT_API_KEY"}
        out = subprocess.run(base + ["status"], capture_output=True, text=True, timeout=60,
                             env=env)
        self.assertEqual(out.returncode, 1)
        self.assertIn("the router refused the call", out.stderr)
        self.assertIn("API key", out.stderr)
        out = subprocess.run(base + ["health"], capture_output=True, text=True, timeout=60,
                             env=env)
        self.assertEqual(out.stdout, "SERVING\n", out.stderr)
        # Plaintext to a TLS port: the message says what to pass.
        out = subprocess.run([ctl, "--address=" + self.cluster.address, "--timeout_s=10",
                              "--api_key_file=" + self.key_file, "status"],
                             capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(out.returncode, 1)
        self.assertIn("pass --tls_ca", out.stderr)
        bench = subprocess.run(
            [os.path.join(BIN, "tools", "shift-bench"), "--address=" + self.cluster.address,
             "--tls_ca=" + ca, "--api_key_file=" + self.key_file, "--workload=closed",
             "--concurrency=2", "--requests=4", "--input_tokens=16", "--output_tokens=8",
             "--progress=false"], capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual(bench.returncode, 0, bench.stderr)
        self.assertIn("requests 4, completed 4, failed 0", bench.stdout)

    def test_a_certificate_and_keys_rotated_on_disk_are_picked_up(self):
        ca = self.pki.path("ca.pem")
        port = self.cluster.port
        self.assertEqual(presented_common_name(port, ca), "shift-router")
        self.pki.issue("router", "ca", "shift-router-rotated")
        deadline = time.time() + 30
        while presented_common_name(port, ca) != "shift-router-rotated":
            self.assertLess(time.time(), deadline, "the new certificate was not picked up")
            time.sleep(0.5)
        self.assertEqual(self.client(api_key=KEY, tls_ca=ca).generate(
            text=PROMPT, max_tokens=16, ignore_eos=True)[0], self.want)
        # API keys: the old one stops working, the new one starts.
        time.sleep(1.1)  # a new modification time
        with open(self.keys + ".new", "w") as f:
            f.write("%s tenant-a\n%s\n" % (ROTATED_KEY, OTHER_KEY))
        os.replace(self.keys + ".new", self.keys)
        deadline = time.time() + 30
        while code_of(self.client(api_key=KEY, tls_ca=ca).status)[0] == grpc.StatusCode.OK:
            self.assertLess(time.time(), deadline, "the rotated key file was not picked up")
            time.sleep(0.5)
        self.assertTrue(self.client(api_key=ROTATED_KEY, tls_ca=ca).status()["groups"][0]["ready"])
        # The ranks (mutual TLS, certificates unchanged) are still serving.
        self.assertEqual(self.client(api_key=ROTATED_KEY, tls_ca=ca).generate(
            text=PROMPT, max_tokens=16, ignore_eos=True)[0], self.want)
        # The other tests use the first keys again.
        time.sleep(1.1)
        with open(self.keys + ".new", "w") as f:
            f.write("%s tenant-a\n%s\n" % (KEY, OTHER_KEY))
        os.replace(self.keys + ".new", self.keys)
        deadline = time.time() + 30
        while code_of(self.client(api_key=KEY, tls_ca=ca).status)[0] != grpc.StatusCode.OK:
            self.assertLess(time.time(), deadline, "the restored key file was not picked up")
            time.sleep(0.5)


if __name__ == "__main__":
    unittest.main(verbosity=2)
