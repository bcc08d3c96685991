#!/usr/bin/env python3
"""Logs a person can follow: a router and a 2-rank group with
--log_format=json serve, refuse and cancel requests, lose a rank and
re-form, and drain; every line each process wrote (gRPC's included) must
parse as one JSON object with ts, level, component and msg, every event
must be there with its ids, and a request_id with control characters must
come out exactly, inside its own line."""

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402


def lines_of(path):
    with open(path, encoding="utf-8", errors="strict") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


class JsonLogsTest(unittest.TestCase):

    def test_every_line_is_json_and_every_event_is_there(self):
        tmp = tempfile.mkdtemp(prefix="shift-logs-")
        model = cluster.make_model(os.path.join(tmp, "model"))
        trace = os.path.join(tmp, "steps.jsonl")
        c = cluster.Cluster(tmp, "logs", model, world_size=2,
                            router_flags=["--log_format=json", "--heartbeat_timeout_s=2",
                                          "--step_trace=" + trace],
                            worker_flags=["--log_format=json"])
        hostile_id = "odd\x01id\n\"quoted\" 2026-01-01T00:00:00.000Z ERROR forged"
        try:
            c.client.generate(text="hello there", max_tokens=4, request_id="req-ok")
            c.client.generate(text="hello again", max_tokens=2, request_id=hostile_id)
            with self.assertRaises(grpc.RpcError):
                c.client.generate(text="x", max_tokens=0, request_id="req-refused")
            call = c.client.generate_stream(text="a long one", max_tokens=1000, ignore_eos=True,
                                            request_id="req-cancel")
            next(iter(call))
            call.cancel()
            # A rank dies and comes back: the group re-forms.
            c.ranks[(0, 1)].send_signal(signal.SIGKILL)
            c.ranks[(0, 1)].wait()
            time.sleep(3)
            c.start_rank(0, 1)
            c.wait_ready([0], timeout=60)
            c.client.generate(text="after", max_tokens=2, request_id="req-after")
        finally:
            c.stop()
        try:
            by_file = {p: lines_of(p) for p in c.logs}
            events, access = [], {}
            for path, lines in by_file.items():
                self.assertTrue(lines, path)
                for line in lines:
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        self.fail("%s: not a JSON line: %r" % (path, line))
                    for key in ("ts", "level", "component", "msg"):
                        self.assertIn(key, obj, line)
                    self.assertRegex(obj["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
                    if "event" in obj:
                        events.append(obj)
                    if obj["component"] == "access":
                        access[obj["request_id"]] = obj
            names = {e["event"] for e in events}
            for event in ("serving", "rank_registered", "group_formed", "rank_lost",
                          "group_reformed", "request_refused", "drain_begun", "drain_done"):
                self.assertIn(event, names, sorted(names))
            refused = [e for e in events if e["event"] == "request_refused"]
            self.assertEqual(refused[0]["request_id"], "req-refused")
            self.assertEqual(refused[0]["code"], "INVALID_ARGUMENT")
            lost = [e for e in events if e["event"] == "rank_lost"]
            self.assertEqual((lost[0]["group"], lost[0]["rank"]), ("0", "1"))
            reformed = [e for e in events if e["event"] == "group_reformed"]
            self.assertGreater(int(reformed[0]["generation"]), 1)
            self.assertEqual(access["req-ok"]["status"], "OK")
            self.assertEqual(access["req-ok"]["generated_tokens"], "4")
            self.assertEqual(access["req-ok"]["finish_reason"], "length")
            # A prefill step and three decode steps, in whichever modes.
            self.assertEqual(int(access["req-ok"]["tp_steps"]) +
                             int(access["req-ok"]["sp_steps"]), 4)
            self.assertEqual(access["req-ok"]["group"], "0")
            self.assertEqual(access["req-ok"]["generation"], "1")
            self.assertEqual(int(access["req-after"]["generation"]),
                             int(reformed[0]["generation"]))
            self.assertEqual(access["req-cancel"]["status"], "CANCELLED")
            self.assertEqual(access["req-after"]["status"], "OK")
            self.assertIn(hostile_id, access)  # exactly as sent, on its own line
            # The step trace names each arrival by its request_id.
            with open(trace, encoding="utf-8") as f:
                named = {}
                for line in f:
                    named.update(json.loads(line)["request_ids"])
            self.assertIn("req-ok", named.values())
            self.assertIn(hostile_id, named.values())
            # Ranks log as the router does, with their group and rank.
            worker_lines = [json.loads(line) for p, ls in by_file.items() if "-g0-r" in p
                            for line in ls]
            self.assertTrue(any(o["component"] == "worker" and o.get("rank") == "1"
                                for o in worker_lines))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
