#!/usr/bin/env python3
"""The router's OpenAI-compatible HTTP API end to end, on 127.0.0.1, with
Python's own HTTP client: the tiny model with a real Llama 3 tokenizer and a
real chat template (../shared/data). Chat completions give the tokens gRPC's
Generate gives on the prompt Jinja2 renders (the reference); completions,
streamed or not, n, logprobs, stop strings and usage; errors in OpenAI's
shape; a stream abandoned midway frees its KV blocks; slow and idle clients
are closed while others are served; API keys, tenants and TLS as on gRPC.
"""

import http.client
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
import security_test  # noqa: E402  (its Pki: a CA and the router's certificate)

DATA = os.environ.get("SHIFT_SHARED_DATA") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data")
LLAMA3_TOKENIZER = os.path.join(DATA, "tokenizers", "llama-bpe.tokenizer.json")
LLAMA3_TEMPLATE = os.path.join(DATA, "chat_templates", "template_llama3.jinja")


def llama3_model(directory):
    """The tiny model with Llama 3's tokenizer (embedding rows to match) and
    its special tokens: BOS <|begin_of_text|>, EOS <|eot_id|>."""
    cluster.make_model(directory, extra=["--vocab_size=128256"])
    shutil.copy(LLAMA3_TOKENIZER, os.path.join(directory, "tokenizer.json"))
    for name, edit in [("config.json", {"bos_token_id": 128000, "eos_token_id": 128009}),
                       ("generation_config.json", {"bos_token_id": 128000,
                                                   "eos_token_id": 128009}),
                       ("tokenizer_config.json", {"bos_token": "<|begin_of_text|>",
                                                  "eos_token": "<|eot_id|>"})]:
        path = os.path.join(directory, name)
        with open(path) as f:
            config = json.load(f)
        config.update(edit)
        with open(path, "w") as f:
            json.dump(config, f)
    return directory


def render_reference(template_path, variables):
    """The chat prompt as transformers renders it (the shared renderer's
    environment), with today's date as the server uses."""
    sys.path.insert(0, os.path.join(DATA, "chat_templates"))
    import render  # noqa: E402
    from datetime import datetime
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = render.tojson
    env.globals["raise_exception"] = render.raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    with open(template_path) as f:
        return env.from_string(f.read()).render(**variables)


class Http:
    """Requests to one HTTP port (JSON in, (status, body or events) out)."""

    def __init__(self, port, key=None, tls_ca=None):
        self.port, self.key, self.tls_ca = port, key, tls_ca

    def connection(self, timeout=60):
        if self.tls_ca:
            context = ssl.create_default_context(cafile=self.tls_ca)
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def headers(self, extra=None):
        h = {"Content-Type": "application/json"}
        if self.key:
            h["Authorization"] = "Bearer " + self.key
        h.update(extra or {})
        return h

    def request(self, method, path, body=None, raw=None, headers=None):
        c = self.connection()
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        c.request(method, path, body=data, headers=self.headers(headers))
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
        c.close()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text

    def post(self, path, body, **kw):
        return self.request("POST", path, body=body, **kw)

    def stream(self, path, body):
        """(status, [event objects], saw [DONE]) of a streamed request."""
        c = self.connection()
        c.request("POST", path, body=json.dumps(dict(body, stream=True)), headers=self.headers())
        r = c.getresponse()
        if r.status != 200:
            return r.status, json.loads(r.read()), False
        assert r.getheader("Content-Type") == "text/event-stream"
        events, done = [], False
        for line in r:
            line = line.decode().rstrip("\n")
            if not line:
                continue
            assert line.startswith("data: "), line
            if line == "data: [DONE]":
                done = True
                continue
            events.append(json.loads(line[6:]))
        c.close()
        return 200, events, done


def chat_text(events):
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])


class OpenAiApiTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-openai-")
        cls.model = llama3_model(os.path.join(cls.tmp, "model"))
        cls.c = cluster.Cluster(cls.tmp, "main", cls.model, world_size=2, router_flags=[
            "--http_port=0", "--chat_template=" + LLAMA3_TEMPLATE, "--http_timeout_s=1",
            "--model_name=tiny-llama3"])
        cls.http = Http(cls.c.http_port)

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_models_and_health(self):
        status, models = self.http.request("GET", "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual(models["object"], "list")
        self.assertEqual(models["data"][0]["id"], "tiny-llama3")
        self.assertEqual(self.http.request("GET", "/health")[0], 200)

    def test_router_and_ranks_export_process_series(self):
        rank = self.c.client.status()["groups"][0]["ranks"][0]["metrics_address"]
        for text in (self.c.metrics(), cluster.http_get(rank)):
            self.assertGreater(cluster.metric(text, "process_resident_memory_bytes"), 1 << 20)
            self.assertGreater(cluster.metric(text, "process_open_fds"), 3)
            self.assertGreater(cluster.metric(text, "process_start_time_seconds"),
                               time.time() - 3600)
            self.assertIsNotNone(cluster.metric(text, "process_cpu_seconds_total"))

    def test_greedy_chat_gives_generates_tokens_on_the_rendered_prompt(self):
        messages = [{"role": "system", "content": "You are brief."},
                    {"role": "user", "content": "Name three colours."}]
        rendered = render_reference(LLAMA3_TEMPLATE, {
            "messages": messages, "add_generation_prompt": True,
            "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
        ids, text, final, deltas = self.c.client.generate(
            text=rendered, parse_special=True, add_special_tokens=False, max_tokens=12,
            temperature=0, ignore_eos=True, return_logprob=True)
        want_logprobs = [lp["logprob"] for d in deltas for lp in d["logprobs"]]
        body = {"model": "tiny-llama3", "messages": messages, "max_tokens": 12, "temperature": 0,
                "ignore_eos": True, "logprobs": True}
        status, whole = self.http.post("/v1/chat/completions", body)
        self.assertEqual(status, 200, whole)
        self.assertEqual(whole["object"], "chat.completion")
        choice = whole["choices"][0]
        self.assertEqual(choice["message"]["content"], text)
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(whole["usage"]["prompt_tokens"], final["usage"]["prompt_tokens"])
        self.assertEqual(whole["usage"]["completion_tokens"], 12)
        got = [entry["logprob"] for entry in choice["logprobs"]["content"]]
        self.assertEqual(len(got), 12)
        for a, b in zip(got, want_logprobs):
            self.assertAlmostEqual(a, b, places=5)
        # Streamed: the same text, a role first, usage last, then [DONE].
        status, events, done = self.http.stream(
            "/v1/chat/completions", dict(body, stream_options={"include_usage": True}))
        self.assertEqual(status, 200)
        self.assertTrue(done)
        self.assertEqual(events[0]["choices"][0]["delta"]["role"], "assistant")
        self.assertEqual(chat_text(events), text)
        self.assertEqual(events[-2]["choices"][0]["finish_reason"], "length")
        self.assertEqual(events[-1]["choices"], [])
        self.assertEqual(events[-1]["usage"]["completion_tokens"], 12)
        self.assertEqual(len({e["id"] for e in events}), 1)

    def test_completions_whole_streamed_n_stop_and_logprobs(self):
        body = {"prompt": "The quick brown fox", "max_tokens": 10, "temperature": 0,
                "ignore_eos": True}
        status, whole = self.http.post("/v1/completions", body)
        self.assertEqual(status, 200, whole)
        text = whole["choices"][0]["text"]
        self.assertEqual(whole["object"], "text_completion")
        status, events, done = self.http.stream("/v1/completions", body)
        self.assertTrue(done)
        self.assertEqual("".join(e["choices"][0]["text"] for e in events), text)
        # Token ids as the prompt give the same answer.
        status, by_ids = self.http.post("/v1/completions", dict(body, prompt=[
            int(t) for t in self.tokenize("The quick brown fox")]))
        self.assertEqual(by_ids["choices"][0]["text"], text)
        # n = 2 with a seed: two choices, each its own seed (seed + i), so
        # the same request gives the same two texts again.
        sampled = {"prompt": "The quick brown fox", "max_tokens": 8, "temperature": 1.0,
                   "n": 2, "seed": 11, "logprobs": 2}
        status, first = self.http.post("/v1/completions", sampled)
        self.assertEqual(status, 200, first)
        self.assertEqual([c["index"] for c in first["choices"]], [0, 1])
        self.assertNotEqual(first["choices"][0]["text"], first["choices"][1]["text"])
        status, again = self.http.post("/v1/completions", sampled)
        self.assertEqual([c["text"] for c in again["choices"]],
                         [c["text"] for c in first["choices"]])
        lp = first["choices"][0]["logprobs"]
        self.assertEqual(len(lp["tokens"]), 8)
        self.assertEqual(len(lp["top_logprobs"][0]), 2)
        self.assertEqual(first["usage"]["completion_tokens"], 16)
        # A stop string: the text ends before it.
        if len(text) > 4:
            stop = text[2:4]
            status, stopped = self.http.post("/v1/completions", dict(body, stop=[stop]))
            self.assertEqual(stopped["choices"][0]["finish_reason"], "stop")
            self.assertEqual(stopped["choices"][0]["text"], text[:text.find(stop)])
        # A list of prompts: one choice each, usage summed.
        status, many = self.http.post("/v1/completions", dict(body, prompt=["a", "b c"]))
        self.assertEqual(len(many["choices"]), 2)
        self.assertEqual(many["usage"]["completion_tokens"], 20)

    def tokenize(self, text):
        import subprocess
        out = subprocess.run([os.path.join(cluster.BIN, "tools", "shift-inspect"),
                              "--tokenizer=" + os.path.join(self.model, "tokenizer.json"),
                              "--prompt=" + text],
                             check=True, capture_output=True, text=True, timeout=60)
        return out.stdout.split()

    def test_errors_have_openais_shape_and_status(self):
        cases = [
            ("/v1/completions", {"prompt": "x", "presence_penalty": 1}, 400, "presence_penalty"),
            ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "gpt-4"),
            ("/v1/completions", {"prompt": "x", "n": 17}, 400, "`n`"),
            ("/v1/completions", {"prompt": "x", "max_tokens": 99999}, 400, "maximum model length"),
            ("/v1/chat/completions", {"messages": "hi"}, 400, "messages"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}] * 10000},
             400, "prompt"),
            ("/v1/completions", {"prompt": "x", "tpot_slo_ms": 0.01}, 400, "tpot_slo_ms"),
            ("/v1/completions", {"prompt": "x", "tpot_slo_ms": "fast"}, 400, "tpot_slo_ms"),
            ("/v1/completions", {"prompt": "x", "tpot_slo_ms": 50, "max_tokens": 2}, 200, None),
            ("/v1/completions", {"prompt": "x", "tools": []}, 200, None),  # unknown: ignored
        ]
        for path, body, want, words in cases:
            status, reply = self.http.post(path, body)
            self.assertEqual(status, want, (body if len(str(body)) < 200 else path, reply))
            if words:
                self.assertIn(words, reply["error"]["message"])
                self.assertEqual(reply["error"]["code"], want)
        for raw, words in [(b"{not json", "not valid JSON"),
                           (b'{"prompt": "\xff\xfe"}', "not valid JSON"),
                           (b"[" * 100000 + b"]" * 100000, "deeper than"),
                           (b'{"prompt": 3}', "`prompt`")]:
            status, reply = self.http.request("POST", "/v1/completions", raw=raw)
            self.assertEqual(status, 400, reply)
            self.assertIn(words, reply["error"]["message"])
        # 10 MB: refused by its Content-Length, before the body is read.
        with socket.create_connection(("127.0.0.1", self.c.http_port)) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                      % (10 << 20) + b"x" * 65536)
            reply = s.recv(65536)
        self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply)
        self.assertIn(b"request_too_large", reply)
        self.assertEqual(self.http.request("GET", "/v1/nothing")[0], 404)
        self.assertEqual(self.http.request("GET", "/v1/completions")[0], 405)
        metrics = self.c.metrics()
        self.assertGreater(cluster.metric(
            metrics, 'shift_http_responses_total{endpoint="completions",status="400"}'), 0)

    def test_an_abandoned_stream_frees_its_blocks_at_once(self):
        before = cluster.metric(self.c.metrics(), 'shift_request_errors_total{code="CANCELLED"}')
        before = before or 0
        body = {"messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": 1500, "ignore_eos": True, "stream": True}
        sock = socket.create_connection(("127.0.0.1", self.c.http_port))
        payload = json.dumps(body).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        got = b""
        while got.count(b"data: ") < 3:
            got += sock.recv(65536)
        self.assertTrue(got.startswith(b"HTTP/1.1 200"))
        sock.close()
        deadline = time.time() + 10
        while True:
            status = self.c.client.status()
            running = sum(g["running_sequences"] for g in status["groups"])
            used = sum(g["kv_blocks_used"] for g in status["groups"])
            text = self.c.metrics()
            cancelled = cluster.metric(text, 'shift_request_errors_total{code="CANCELLED"}') or 0
            if running == 0 and cancelled == before + 1:
                break
            self.assertLess(time.time(), deadline,
                            "running %d, blocks %d, cancelled %s" % (running, used, cancelled))
            time.sleep(0.05)

    def test_slow_and_idle_clients_are_closed_while_others_are_served(self):
        slow = socket.create_connection(("127.0.0.1", self.c.http_port))
        slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        idle = socket.create_connection(("127.0.0.1", self.c.http_port))
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(idle.recv(4096).startswith(b"HTTP/1.1 200"))
        # Served meanwhile.
        status, reply = self.http.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})
        self.assertEqual(status, 200, reply)
        for s in (slow, idle):
            s.settimeout(10)
            start = time.time()
            while True:  # trickle until closed (--http_timeout_s=1)
                try:
                    s.sendall(b"X-A: b\r\n")
                    if s.recv(4096) == b"":
                        break
                except (ConnectionError, socket.timeout):
                    break
            self.assertLess(time.time() - start, 8)
            s.close()

    def test_a_full_queue_is_429(self):
        tmp = os.path.join(self.tmp, "small")
        os.makedirs(tmp)
        c = cluster.Cluster(tmp, "small", self.model, world_size=1, router_flags=[
            "--http_port=0", "--max_queued_requests=1", "--max_num_seqs=1"])
        try:
            http_ = Http(c.http_port)
            results = []

            def one():
                results.append(http_.post("/v1/completions", {
                    "prompt": "x", "max_tokens": 200, "ignore_eos": True})[0])
            threads = [threading.Thread(target=one) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertIn(429, results)
            self.assertIn(200, results)
        finally:
            c.stop()


class SecuredTest(unittest.TestCase):
    """API keys (tenants) and TLS on the HTTP port, as on gRPC's."""

    key_a = "key-a-0123456789abcdef"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-openai-tls-")
        cls.pki = security_test.Pki(os.path.join(cls.tmp, "pki"))
        keys = os.path.join(cls.tmp, "keys")
        with open(keys, "w") as f:
            f.write("key-a-0123456789abcdef tenant-a\nkey-b-0123456789abcdef tenant-b\n")
        cls.model = cluster.make_model(os.path.join(cls.tmp, "model"))
        cls.c = cluster.Cluster(
            cls.tmp, "tls", cls.model, world_size=1,
            router_flags=["--http_port=0", "--api_key_file=" + keys,
                          "--tls_cert=" + cls.pki.path("router.pem"),
                          "--tls_key=" + cls.pki.path("router.key"),
                          "--tls_ca=" + cls.pki.path("ca.pem")],
            worker_flags=["--tls_ca=" + cls.pki.path("ca.pem"),
                          "--tls_cert=" + cls.pki.path("rank.pem"),
                          "--tls_key=" + cls.pki.path("rank.key")],
            client_options={"api_key": "key-a-0123456789abcdef", "tls_ca": cls.pki.path("ca.pem")})

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_keys_and_tls(self):
        ca = self.pki.path("ca.pem")
        body = {"prompt": "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 4,
                "max_tokens": 2}
        for key, want in [(None, 401), ("wrong", 401), (self.key_a, 200)]:
            status, reply = Http(self.c.http_port, key=key, tls_ca=ca).post("/v1/completions",
                                                                             body)
            self.assertEqual(status, want, reply)
        self.assertEqual(Http(self.c.http_port, key="x", tls_ca=ca).request(
            "GET", "/health")[0], 200)  # health stays open
        # Plaintext on the TLS port gets nothing.
        with self.assertRaises((ConnectionError, http.client.HTTPException, OSError)):
            Http(self.c.http_port, key=self.key_a).post("/v1/completions", body)
        # Tenants: b does not reuse a's cached blocks; a does.
        a = Http(self.c.http_port, key=self.key_a, tls_ca=ca)
        b = Http(self.c.http_port, key="key-b-0123456789abcdef", tls_ca=ca)
        def cached(http_):
            return http_.post("/v1/completions", body)[1]["usage"]["prompt_tokens_details"][
                "cached_tokens"]
        self.assertEqual(cached(b), 0)  # a's blocks (from the call above) are not b's
        self.assertGreater(cached(a), 0)


    def test_a_rotated_certificate_is_picked_up(self):
        port, ca = self.c.http_port, self.pki.path("ca.pem")
        self.assertEqual(security_test.presented_common_name(port, ca), "shift-router")
        self.pki.issue("router", "ca", "shift-router-rotated")
        deadline = time.time() + 15
        while security_test.presented_common_name(port, ca) != "shift-router-rotated":
            self.assertLess(time.time(), deadline, "the HTTP port kept the old certificate")
            time.sleep(0.2)
        status, _ = Http(port, key=self.key_a, tls_ca=ca).post(
            "/v1/completions", {"prompt": "hi", "max_tokens": 1})
        self.assertEqual(status, 200)
        self.assertIn("event=certificate_rotated", self.router_log())

    def test_reloaded_keys_are_used_and_logged(self):
        ca, key_c = self.pki.path("ca.pem"), "key-c-0123456789abcdef"
        keys = os.path.join(self.tmp, "keys")
        with open(keys, "a") as f:
            f.write(key_c + " tenant-c\n")
        later = time.time() + 2
        os.utime(keys, (later, later))
        deadline = time.time() + 15
        while Http(self.c.http_port, key=key_c, tls_ca=ca).post(
                "/v1/completions", {"prompt": "hi", "max_tokens": 1})[0] != 200:
            self.assertLess(time.time(), deadline, "the new key was never accepted")
            time.sleep(0.3)
        self.assertRegex(self.router_log(), r"event=keys_reloaded keys=3")

    def router_log(self):
        with open(self.c.logs[0], encoding="utf-8") as f:
            return f.read()


if __name__ == "__main__":
    unittest.main(verbosity=2)
