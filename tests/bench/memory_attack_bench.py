#!/usr/bin/python3
"""The memory attacks of a hostile client against a router started with
default limits (ports aside), and the router's resident memory after each.
A benchmark, not a test: it prints a table of what it measured.

    tests/bench/memory_attack_bench.py --build=build

Attacks, each against a fresh router and one CPU worker on the tiny model:
  stop     30 concurrent Generate calls, each with 900,000 stop strings
  store    100 rendezvous writes of 4 MB on the internal port
  window   40 streams over a raw HTTP/2 connection that advertises a zero
           receive window, so nothing generated can be sent; held for
           --window_s seconds
Reported: VmRSS and VmHWM (peak) of the router, in MiB, before and after.
"""

import argparse
import concurrent.futures
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import grpc


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build", help="the build folder whose router to attack")
    parser.add_argument("--window_s", type=int, default=45)
    parser.add_argument("--only", default="stop,store,window")
    return parser.parse_args()


ARGS = parse_args()
# cluster.py finds the binaries when it is imported.
os.environ["SHIFT_BINARY_DIR"] = os.path.abspath(ARGS.build)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from cluster import Cluster, make_model  # noqa: E402
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
    # As an insider: with the deployment's internal token (the router's
    # default file), which an outsider lacks (its calls get UNAUTHENTICATED
    # before the store reads them).
    with open(os.path.expanduser("~/.shift/internal_token")) as f:
        metadata = (("x-shift-internal-token", f.read().strip()),)
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


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def literal(name, value):
    """An HPACK literal header field without indexing, new name, no Huffman."""
    def string(s):
        assert len(s) < 127
        return bytes([len(s)]) + s
    return b"\x00" + string(name) + string(value)


def attack_window(cluster, seconds):
    host, port = cluster.address.split(":")
    sock = socket.create_connection((host, int(port)))
    # Preface, then SETTINGS_INITIAL_WINDOW_SIZE = 0: the server may send no
    # DATA on any stream until we open the window, which we never do.
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
                 frame(0x4, 0, 0, struct.pack(">HI", 0x4, 0)))
    request = shift_client.encode_generate_request(text="hello there", max_tokens=400,
                                                   ignore_eos=True)
    message = b"\x00" + struct.pack(">I", len(request)) + request
    for i in range(40):
        stream = 1 + 2 * i
        headers = b"".join([
            literal(b":method", b"POST"), literal(b":scheme", b"http"),
            literal(b":path", b"/shift.v1.Generation/Generate"),
            literal(b":authority", cluster.address.encode()),
            literal(b"content-type", b"application/grpc"), literal(b"te", b"trailers")])
        sock.sendall(frame(0x1, 0x4, stream, headers) + frame(0x0, 0x1, stream, message))
    sock.settimeout(0.5)
    end = time.time() + seconds
    peak = 0.0
    while time.time() < end:
        try:
            if not sock.recv(65536):
                break
        except socket.timeout:
            pass
        peak = max(peak, rss(cluster.router.pid)[0])
    sock.close()
    return "40 streams for %d s (peak RSS while held %.0f MiB)" % (seconds, peak)


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
            else:
                outcome = attack_window(cluster, args.window_s)
            time.sleep(1)
            after, peak = rss(cluster.router.pid)
            print("| %s | %s | %.0f MiB | %.0f MiB | %.0f MiB |" % (name, outcome, before, after,
                                                                  peak))
            sys.stdout.flush()
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
