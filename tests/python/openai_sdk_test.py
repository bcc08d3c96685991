#!/usr/bin/env python3
"""The official openai npm package (4.x, pinned with its lock file in
tests/node) against the router's HTTP API: installs it with `npm ci` into
the build tree, starts a router with API keys and a small-queue router, and
runs tests/node/openai_sdk_test.mjs against them."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node")
KEY = "sdk-test-key-0123456789"


def install(where):
    """The pinned package in `where` (npm ci, again only when the lock changed)."""
    os.makedirs(where, exist_ok=True)
    lock = os.path.join(NODE_DIR, "package-lock.json")
    stamp = os.path.join(where, "installed.lock")
    for name in ("package.json", "package-lock.json", "openai_sdk_test.mjs"):
        shutil.copy(os.path.join(NODE_DIR, name), where)
    if os.path.exists(stamp) and open(stamp).read() == open(lock).read():
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=where,
                   check=True, timeout=300)
    shutil.copy(lock, stamp)


class OpenAiSdkTest(unittest.TestCase):

    def test_the_official_sdk(self):
        if shutil.which("node") is None or shutil.which("npm") is None:
            self.fail("node and npm are needed (tools/setup-deps installs them)")
        where = os.path.join(os.path.abspath(cluster.BIN), "node-openai")
        install(where)
        tmp = tempfile.mkdtemp(prefix="shift-openai-sdk-")
        keys = os.path.join(tmp, "keys")
        with open(keys, "w") as f:
            f.write(KEY + " sdk\n")
        model = cluster.make_model(os.path.join(tmp, "model"))
        template = os.path.join(tmp, "chatml.jinja")
        with open(template, "w") as f:
            f.write("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
                    "assistant\n{% endif %}")
        flags = ["--http_port=0", "--api_key_file=" + keys, "--chat_template=" + template]
        main = small = None
        try:
            main = cluster.Cluster(tmp, "main", model, world_size=2, router_flags=flags,
                                   client_options={"api_key": KEY})
            small = cluster.Cluster(tmp, "small", model, world_size=1, router_flags=flags + [
                "--max_queued_requests=1", "--max_num_seqs=1"], client_options={"api_key": KEY})
            env = dict(os.environ,
                       SHIFT_BASE_URL="http://127.0.0.1:%d/v1" % main.http_port,
                       SHIFT_SMALL_BASE_URL="http://127.0.0.1:%d/v1" % small.http_port,
                       SHIFT_API_KEY=KEY,
                       SHIFT_METRICS_URL="http://%s/metrics" % main.metrics_address)
            run = subprocess.run(["node", "openai_sdk_test.mjs"], cwd=where, env=env,
                                 capture_output=True, text=True, timeout=300)
            print(run.stdout)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            self.assertIn("11 checks passed", run.stdout)
        finally:
            for c in (main, small):
                if c:
                    c.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
