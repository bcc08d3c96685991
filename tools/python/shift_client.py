"""A small, independent client for shift's public gRPC API.

It speaks the protobuf wire format directly (no generated stubs, no protoc),
so tests exercise the server exactly as a foreign client would. Only the
fields the tests use are encoded; decoding keeps every field it meets.
"""

import struct

import grpc


# ---- wire format -------------------------------------------------------------

def _varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire):
    return _varint((field << 3) | wire)


def _len(field, data):
    return _key(field, 2) + _varint(len(data)) + data


def _read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def parse(buf):
    """Decodes one message into {field: [raw values]}: ints for varints,
    bytes for length-delimited fields, 4 or 8 raw bytes for fixed ones."""
    fields = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        fields.setdefault(field, []).append(value)
    return fields


def _ints(values):
    """Repeated int32 fields, packed or not."""
    out = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
        else:
            i = 0
            while i < len(v):
                n, i = _read_varint(v, i)
                out.append(n - (1 << 64) if n >= 1 << 63 else n)
    return out


def _one(fields, field, default=None):
    return fields[field][-1] if field in fields else default


def _float(raw):
    return struct.unpack("<f", raw)[0]


def _double(raw):
    return struct.unpack("<d", raw)[0]


def _str(raw):
    return raw.decode("utf-8") if raw is not None else ""


# ---- shift.v1 messages ------------------------------------------------------------

FINISH_REASONS = {0: "unspecified", 1: "length", 2: "stop", 3: "eos", 4: "cancelled"}


def encode_generate_request(text=None, token_ids=None, max_tokens=16, temperature=None,
                            top_p=None, top_k=None, seed=None, stop=(), stop_token_ids=(),
                            ignore_eos=False, top_logprobs=0, return_logprob=False,
                            request_id="", parse_special=False, add_special_tokens=None,
                            tpot_slo_ms=0):
    """temperature, top_p, top_k and add_special_tokens left None are unset
    (the model's defaults); any value, 0 included, is sent."""
    sampling = b""
    if max_tokens:
        sampling += _key(1, 0) + _varint(max_tokens)
    if temperature is not None:
        sampling += _key(2, 5) + struct.pack("<f", temperature)
    if top_p is not None:
        sampling += _key(3, 5) + struct.pack("<f", top_p)
    if top_k is not None:
        sampling += _key(4, 0) + _varint(top_k)
    if seed is not None:
        sampling += _key(5, 0) + _varint(seed)
    # Strings or bytes (raw bytes reach the server as they are).
    sampling += b"".join(_len(6, s if isinstance(s, bytes) else s.encode("utf-8")) for s in stop)
    if stop_token_ids:
        sampling += _len(7, b"".join(_varint(t) for t in stop_token_ids))
    if ignore_eos:
        sampling += _key(8, 0) + _varint(1)
    if top_logprobs:
        sampling += _key(9, 0) + _varint(top_logprobs)
    if return_logprob:
        sampling += _key(10, 0) + _varint(1)
    msg = b""
    if request_id:
        msg += _len(1, request_id.encode())
    if text is not None:
        msg += _len(2, text if isinstance(text, bytes) else text.encode("utf-8"))
    if token_ids is not None:
        msg += _len(3, _len(1, b"".join(_varint(t) for t in token_ids)) if token_ids else b"")
    msg += _len(4, sampling)
    if parse_special:
        msg += _key(5, 0) + _varint(1)
    if add_special_tokens is not None:
        msg += _key(6, 0) + _varint(1 if add_special_tokens else 0)
    if tpot_slo_ms:
        msg += _key(7, 1) + struct.pack("<d", tpot_slo_ms)
    return msg


def decode_generate_response(buf):
    f = parse(buf)
    if 1 in f:
        d = parse(_one(f, 1))
        logprobs = []
        for raw in d.get(3, []):
            lp = parse(raw)
            top = [(_ints([_one(parse(t), 1, 0)])[0], _float(_one(parse(t), 2, b"\0\0\0\0")))
                   for t in lp.get(3, [])]
            logprobs.append({"token_id": _ints(lp.get(1, [0]))[0],
                             "logprob": _float(_one(lp, 2, b"\0\0\0\0")), "top": top})
        return {"delta": {"token_ids": _ints(d.get(1, [])), "text": _str(_one(d, 2, b"")),
                          "logprobs": logprobs}}
    fin = parse(_one(f, 2, b""))
    usage = parse(_one(fin, 3, b""))
    return {"final": {
        "finish_reason": FINISH_REASONS.get(_one(fin, 1, 0), "unknown"),
        "stop_string": _str(_one(fin, 2, b"")),
        "usage": {
            "prompt_tokens": _one(usage, 1, 0),
            "completion_tokens": _one(usage, 2, 0),
            "cached_prompt_tokens": _one(usage, 3, 0),
            "queue_time_seconds": _double(_one(usage, 4, b"\0" * 8)),
            "time_to_first_token_seconds": _double(_one(usage, 5, b"\0" * 8)),
            "e2e_seconds": _double(_one(usage, 6, b"\0" * 8)),
        }}}


def decode_status(buf):
    f = parse(buf)

    def modes(raw):
        m = parse(raw or b"")
        return {"tp_steps": _one(m, 1, 0), "sp_steps": _one(m, 2, 0), "switches": _one(m, 3, 0)}

    groups = []
    for raw in f.get(1, []):
        g = parse(raw)
        ranks = []
        for rr in g.get(4, []):
            r = parse(rr)
            ranks.append({"rank": _one(r, 1, 0), "connected": bool(_one(r, 2, 0)),
                          "address": _str(_one(r, 3, b"")), "kv_blocks": _one(r, 4, 0),
                          "weight_bytes": _one(r, 5, 0),
                          "metrics_address": _str(_one(r, 6, b""))})
        groups.append({"group": _one(g, 1, 0), "generation": _one(g, 2, 0),
                       "ready": bool(_one(g, 3, 0)), "ranks": ranks,
                       "kv_blocks_total": _one(g, 5, 0), "kv_blocks_used": _one(g, 6, 0),
                       "running_sequences": _one(g, 7, 0), "modes": modes(_one(g, 8)),
                       "last_mode": _one(g, 9, 0)})
    return {"groups": groups, "queued_requests": _one(f, 2, 0), "modes": modes(_one(f, 3)),
            "draining": bool(_one(f, 4, 0))}


def decode_model_info(buf):
    f = parse(buf)
    return {"name": _str(_one(f, 1, b"")), "architecture": _str(_one(f, 2, b"")),
            "vocab_size": _one(f, 3, 0), "max_model_len": _one(f, 4, 0),
            "num_layers": _one(f, 5, 0), "hidden_size": _one(f, 6, 0),
            "num_heads": _one(f, 7, 0), "num_kv_heads": _one(f, 8, 0), "head_dim": _one(f, 9, 0),
            "eos_token_ids": _ints(f.get(10, [])),
            "world_size": _one(f, 11, 0), "num_groups": _one(f, 12, 0),
            "shift_policy": _str(_one(f, 13, b"")),
            "sp_degree": _one(f, 14, 0),
            "default_temperature": _float(f[15][-1]) if 15 in f else None,
            "default_top_p": _float(f[16][-1]) if 16 in f else None,
            "default_top_k": _one(f, 17, None),
            "tokenizer": _str(_one(f, 18, b"")),
            "prompt_prefix_ids": _ints(f.get(19, [])),
            "prompt_suffix_ids": _ints(f.get(20, []))}


# ---- calls ----------------------------------------------------------------------

def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_api_key(path):
    """The first key of an API key file (lines "TOKEN [TENANT]", '#' comments)."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return line.split()[0]
    raise ValueError("%s has no key" % path)


class Client:
    """A shift router's public API. With `tls_ca` (and optionally a client
    certificate) the channel uses TLS; with `api_key` every call but health
    sends "authorization: Bearer <api_key>"."""

    def __init__(self, address, api_key=None, tls_ca=None, tls_cert=None, tls_key=None):
        if tls_ca or tls_cert:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_bytes(tls_ca) if tls_ca else None,
                private_key=_read_bytes(tls_key) if tls_key else None,
                certificate_chain=_read_bytes(tls_cert) if tls_cert else None)
            self.channel = grpc.secure_channel(address, credentials)
        else:
            self.channel = grpc.insecure_channel(address)
        self.metadata = [("authorization", "Bearer " + api_key)] if api_key else None
        self._generate = self.channel.unary_stream("/shift.v1.Generation/Generate")
        self._status = self.channel.unary_unary("/shift.v1.Generation/GetStatus")
        self._info = self.channel.unary_unary("/shift.v1.Generation/GetModelInfo")
        self._health = self.channel.unary_unary("/grpc.health.v1.Health/Check")

    def generate_stream(self, timeout=120, **request):
        """The raw streaming call (iterate it for decoded messages; .cancel() it)."""
        return self._generate(encode_generate_request(**request), timeout=timeout,
                              metadata=self.metadata)

    def generate(self, timeout=120, **request):
        """Runs a Generate call to the end: (token_ids, text, final, deltas)."""
        ids, text, final, deltas = [], "", None, []
        for raw in self.generate_stream(timeout=timeout, **request):
            msg = decode_generate_response(raw)
            if "delta" in msg:
                deltas.append(msg["delta"])
                ids += msg["delta"]["token_ids"]
                text += msg["delta"]["text"]
            else:
                assert final is None, "two final messages"
                final = msg["final"]
        assert final is not None, "the stream ended without a final message"
        return ids, text, final, deltas

    def status(self):
        return decode_status(self._status(b"", timeout=10, metadata=self.metadata))

    def model_info(self):
        return decode_model_info(self._info(b"", timeout=10, metadata=self.metadata))

    def list_services(self):
        """Service names, through server reflection."""
        call = self.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        request = _len(7, b"")  # list_services
        for raw in call(iter([request]), timeout=10):
            listing = parse(_one(parse(raw), 6, b""))
            return sorted(_str(_one(parse(s), 1, b"")) for s in listing.get(1, []))
        return []

    def health(self, service=""):
        """1 SERVING, 2 NOT_SERVING."""
        request = _len(1, service.encode()) if service else b""
        return _one(parse(self._health(request, timeout=10)), 1, 0)
