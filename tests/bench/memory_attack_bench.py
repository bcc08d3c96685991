#!/usr/bin/python3
"""The memory attacks of a hostile client against a router started with
default limits (ports aside), and the router's resident memory after each.
A benchmark, not a test: it prints a table of what it measured.

    tests/bench/memory_attack_bench.py --build=build

Attacks, each against a fresh router and one CPU worker on the tiny model:
  stop     30 concurrent Generate calls, each with 900,000 stop strings
  store    100 rendezvous writes of 4 MB on the internal port, as a holder
           of the internal token that is not a welcomed rank (no ticket)
  getbytes 300 concurrent rendezvous Gets of 256 keys of 256 bytes each,
           waiting 20 s, as a holder of the token with no ticket
  window   40 streams over a raw HTTP/2 connection that advertises a zero
           receive window, so nothing generated can be sent; held for
           --window_s seconds (past the 30 s stall timeout)
  rapid    HTTP/2 rapid reset: --resets streams opened (a Generate each)
           and reset at once, over 4 connections
Reported: VmRSS and VmHWM (peak) of the router, in MiB, before and after.
"""

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time

import grpc


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build", help="the build folder whose router to attack")
    parser.add_argument("--window_s", type=int, default=45)
    parser.add_argument("--resets", type=int, default=80000)
    parser.add_argument("--only", default="stop,store,getbytes,window,rapid")
    return parser.parse_args()


ARGS = parse_args()
# cluster.py finds the binaries when it is imported.
os.environ["SHIFT_BINARY_DIR"] = os.path.abspath(ARGS.build)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from cluster import Cluster, make_model  # noqa: E402
import raw_http2  # noqa: E402
import shift_client  # noqa: E402


def rss(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    mib = lambda k: int(fields[k].split()[0]) / 1024.0  # noqa: E731
    return mib("VmRSS"), mib("VmHWM")


def attack_stop(cluster):
    stops = ["\x01"] * 900000  # 2.7 MB on the wire, under the 4 MiB message limit
    codes = []

    def one(_):
        try:
            cluster.client.generate(text="hello", max_tokens=8, stop=stops, timeout=120)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(one, range(30)))
    return ", ".join(sorted(set(codes)))


def attack_store(cluster):
    # With the deployment's internal token (the router's default file),
    # which an outsider lacks (its calls get UNAUTHENTICATED before the
    # store reads them), but without a rank's ticket.
    metadata = internal_token()
    channel = grpc.insecure_channel(cluster.internal_address,
                                    options=[("grpc.max_send_message_length", 8 << 20)])
    store_set = channel.unary_unary("/shift.v1.internal.Rendezvous/Set")
    value = b"x" * 4000000
    codes = {}
    for i in range(100):
        scope = (shift_client._key(1, 0) + shift_client._varint(0) + shift_client._key(2, 0) +
                 shift_client._varint(1))
        request = (shift_client._len(1, scope) + shift_client._len(2, b"key%d" % i) +
                   shift_client._len(3, value))
        try:
            store_set(request, timeout=30, metadata=metadata)
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.RpcError as e:
            codes[e.code().name] = codes.get(e.code().name, 0) + 1
    return ", ".join("%s x%d" % kv for kv in sorted(codes.items()))


def internal_token():
    with open(os.path.expanduser("~/.shift/internal_token")) as f:
        return (("x-shift-internal-token", f.read().strip()),)


def attack_getbytes(cluster):
    channel = grpc.insecure_channel(cluster.internal_address)
    store_get = channel.unary_unary("/shift.v1.internal.Rendezvous/Get")
    generation = cluster.client.status()["groups"][0]["generation"]
    scope = (shift_client._key(1, 0) + shift_client._varint(0) + shift_client._key(2, 0) +
             shift_client._varint(generation))
    keys = b"".join(shift_client._len(2, (b"k%03d" % i) * 64) for i in range(256))
    request = shift_client._len(1, scope) + keys + shift_client._key(3, 0) + \
        shift_client._varint(20000)
    metadata = internal_token()

    def one(_):
        try:
            store_get(request, timeout=30, metadata=metadata)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(one, range(300)))
    return ", ".join("%s x%d" % (c, codes.count(c)) for c in sorted(set(codes)))


def attack_window(cluster, seconds):
    conn = raw_http2.Connection(cluster.address, initial_window=0)
    request = shift_client.encode_generate_request(text="hello there", max_tokens=400,
                                                   ignore_eos=True)
    for i in range(40):
        conn.open(1 + 2 * i, b"/shift.v1.Generation/Generate", request)
    ended = set()
    peak = 0.0
    end = time.time() + seconds
    while time.time() < end:
        for kind, flags, stream, _ in conn.frames(0.5):
            if kind == raw_http2.RST_STREAM or (kind == raw_http2.HEADERS and flags & 0x1):
                ended.add(stream)
        peak = max(peak, rss(cluster.router.pid)[0])
    conn.close()
    return "40 streams held %d s, %d ended by the server (peak RSS while held %.0f MiB)" % (
        seconds, len(ended), peak)


def attack_rapid(cluster, resets):
    request = shift_client.encode_generate_request(text="hello there", max_tokens=400)
    peak = [0.0]

    def one(_):
        def sample():
            peak[0] = max(peak[0], rss(cluster.router.pid)[0])
        return raw_http2.rapid_reset(cluster.address, b"/shift.v1.Generation/Generate", request,
                                     resets // 4, progress=sample)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sent = sum(pool.map(one, range(4)))
    return "%d streams opened and reset (peak RSS while sent %.0f MiB)" % (sent, peak[0])


def main():
    args = ARGS
    tmp = tempfile.mkdtemp(prefix="shift-memory-")
    model = make_model(os.path.join(tmp, "model"))
    print("| attack | outcome | router RSS before | after | peak |")
    print("|---|---|---|---|---|")
    for name in args.only.split(","):
        cluster = Cluster(tmp, name, model, 1)
        try:
            cluster.client.generate(text="warm up", max_tokens=4)
            before = rss(cluster.router.pid)[0]
            if name == "stop":
                outcome = attack_stop(cluster)
            elif name == "store":
                outcome = attack_store(cluster)
            elif name == "getbytes":
                outcome = attack_getbytes(cluster)
            elif name == "window":
                outcome = attack_window(cluster, args.window_s)
            else:
                outcome = attack_rapid(cluster, args.resets)
            # Serving again after it (a group that lost a rank re-forms).
            start = time.time()
            served = None
            while served is None and time.time() < start + 120:
                try:
                    served = cluster.client.generate(text="still there", max_tokens=4,
                                                     timeout=5)[0]
                except grpc.RpcError:
                    time.sleep(0.5)
            if served is None:
                outcome += "; not serving 120 s after it"
            else:
                outcome += "; serving %.1f s after it" % (time.time() - start)
            logs = cluster.all_logs()
            lost = logs.count("event=rank_lost")
            if lost:
                outcome += "; ranks lost: %d" % lost
            time.sleep(1)
            after, peak = rss(cluster.router.pid)
            print("| %s | %s | %.0f MiB | %.0f MiB | %.0f MiB |" % (name, outcome, before, after,
                                                                  peak))
            sys.stdout.flush()
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
