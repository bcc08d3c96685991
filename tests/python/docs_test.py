#!/usr/bin/python3
"""The documents against the tree they describe, and the tree's arrows.

- Every repository path README.md and docs/architecture.md name exists, and
  every file the README's directory table names is in its directory.
- The README's shift-sim example, run as written, prints the TP row of the
  paper comparison that bench/sim/paper.py recorded (bench/sim/paper.json)
  and bench/sim/README.md shows.
- The dependency arrows that went the wrong way before stay turned: nothing
  under sim/, core/ or workload/ includes from tools/, and the backend
  interface (kernels/backend.{h,cc}) includes no backend.
- The Python client imports as a package from tools/python, as its
  pyproject.toml installs it.

Needs a build (SHIFT_BINARY_DIR, default build/) for shift-sim.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.environ.get("SHIFT_BINARY_DIR", os.path.join(ROOT, "build")))
TOPS = ("proto/", "common/", "jinja/", "kernels/", "worker/", "core/", "router/", "tools/",
        "deploy/", "sim/", "workload/", "tests/", "bench/", "docs/", ".ci/")
# Files of a model directory the README names, not files of this tree.
MODEL_FILES = {"config.json", "generation_config.json", "tokenizer.json",
               "tokenizer_config.json", "model.safetensors", "tokenizer.model"}


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def named_paths(text):
    """Repository paths a document names: in backticks, in links, in code."""
    found = set(re.findall(r"`([^`\s]+)`", text)) | set(re.findall(r"\]\(([^)#\s]+)\)", text))
    found |= set(re.findall(r"(?<![\w./-])((?:%s)[\w./-]*)" % "|".join(map(re.escape, TOPS)),
                            text))
    paths = set()
    for p in found:
        p = p.rstrip(".,:;)")
        # Patterns (TARGET, *, {a,b}) name no one file.
        if p.startswith(TOPS) and not re.search(r"[*{}]|TARGET|/N\b", p):
            paths.add(p)
    return paths


class DocsTest(unittest.TestCase):
    def test_every_path_the_documents_name_exists(self):
        for doc in ("README.md", "docs/architecture.md"):
            paths = named_paths(read(doc))
            self.assertGreater(len(paths), 50, doc)
            missing = sorted(p for p in paths if not os.path.exists(os.path.join(ROOT, p)))
            self.assertEqual(missing, [], doc)

    def test_the_directory_table_names_files_of_each_directory(self):
        rows = 0
        for line in read("README.md").splitlines():
            m = re.match(r"\| `([\w/.-]+/)` \|", line)
            if not m:
                continue
            rows += 1
            directory = os.path.join(ROOT, m.group(1))
            self.assertTrue(os.path.isdir(directory), m.group(1))
            names = set()
            for root, _, files in os.walk(directory):
                for f in files:
                    names.add(os.path.relpath(os.path.join(root, f), directory))
                    names.add(f)
            for name in re.findall(r"`([\w/.-]+\.(?:h|cc|cu|cuh|py|proto|json|yaml|mjs))`", line):
                if name in MODEL_FILES or os.path.exists(os.path.join(ROOT, name)):
                    continue
                self.assertIn(name, names, "README's row for %s" % m.group(1))
        self.assertGreaterEqual(rows, 10)

    def test_the_readme_simulator_example_prints_the_papers_tp_row(self):
        readme = read("README.md")
        block = re.search(r"```sh\n(# The TP row of the paper comparison.*?)```", readme, re.S)
        self.assertIsNotNone(block, "the README's shift-sim example")
        lines = block.group(1).splitlines()
        # The example up to its two runs, with this build's shift-sim.
        script = "\n".join(lines[:[i for i, l in enumerate(lines)
                                   if l.startswith("build/tools/shift-sim $paper")][-1] + 1])
        script = script.replace("build/tools/", BIN + "/tools/")
        out = subprocess.run(["bash", "-euc", script], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        tp = json.loads(read("bench/sim/paper.json"))["simulated"]["tp"]
        ttft = [float(v) for v in re.findall(r"^\| TTFT \| ([\d.]+) ms", out.stdout, re.M)]
        tpot = [float(v) for v in re.findall(r"^\| TPOT \| ([\d.]+) ms", out.stdout, re.M)]
        rates = [float(v) for v in re.findall(r"([\d.]+) tokens/s prompt \+ generated",
                                              out.stdout)]
        self.assertEqual(len(ttft), 2, out.stdout)
        # The first run is the low-traffic cells, the second the throughput.
        self.assertAlmostEqual(ttft[0], tp["ttft_ms"], delta=0.051)
        self.assertAlmostEqual(tpot[0], tp["tpot_ms"], delta=0.051)
        self.assertAlmostEqual(rates[1], tp["throughput"], delta=0.051)
        # What the example's comment promises is what it prints.
        comment = block.group(1)
        for value in ("%.1f ms" % ttft[0], "%.1f ms" % tpot[0], "%.1f tokens/s" % rates[1]):
            self.assertIn(value, comment.replace("\n# ", " "))
        # And bench/sim/README.md's table shows the same row.
        row = {m.group(1): m.group(2) for m in re.finditer(
            r"^\| TP \| (TTFT|TPOT|throughput) \| [^|]+ \| ([^|]+) \|", read("bench/sim/README.md"),
            re.M)}
        self.assertEqual(row["TTFT"].strip(), "%.0f ms" % tp["ttft_ms"])
        self.assertEqual(row["TPOT"].strip(), "%.2f ms" % tp["tpot_ms"])
        self.assertEqual(row["throughput"].strip(), "%.1fk" % (tp["throughput"] / 1000))

    def test_the_arrows_point_down(self):
        wrong = []
        for top in ("sim", "core", "workload"):
            for root, _, files in os.walk(os.path.join(ROOT, top)):
                for f in files:
                    path = os.path.join(root, f)
                    with open(path, encoding="utf-8", errors="replace") as source:
                        for line in source:
                            if re.match(r'\s*#\s*include\s+"tools/', line):
                                wrong.append("%s: %s" % (os.path.relpath(path, ROOT), line.strip()))
        self.assertEqual(wrong, [])
        for interface in ("kernels/backend.h", "kernels/backend.cc"):
            includes = re.findall(r'^\s*#\s*include\s+"([^"]+)"', read(interface), re.M)
            self.assertTrue(includes, interface)
            backends = [i for i in includes if i.startswith(("kernels/cpu/", "kernels/cuda/"))]
            self.assertEqual(backends, [], interface)
        # The selection knows them all.
        self.assertIn('#include "kernels/cpu/cpu_backend.h"', read("kernels/backends.cc"))

    def test_the_python_client_imports_as_a_package(self):
        project = tomllib.loads(read("tools/python/pyproject.toml"))
        modules = project["tool"]["setuptools"]["py-modules"]
        self.assertEqual(modules, ["shift_client"])
        for module in modules:
            self.assertTrue(os.path.exists(os.path.join(ROOT, "tools", "python", module + ".py")))
        with tempfile.TemporaryDirectory() as elsewhere:
            out = subprocess.run(
                [sys.executable, "-c", "import shift_client; print(shift_client.Client.__name__, "
                 "sorted(shift_client.decode_model_info(b'')))"],
                cwd=elsewhere, capture_output=True, text=True, timeout=60,
                env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tools", "python")))
        self.assertEqual(out.returncode, 0, out.stderr)
        for field in ("hidden_size", "num_heads", "num_kv_heads", "head_dim", "num_groups"):
            self.assertIn("'%s'" % field, out.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
