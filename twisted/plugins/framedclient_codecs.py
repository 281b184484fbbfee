"""
Twisted plugins: the codecs built into framedclient, as ``twist framedclient
--codec NAME[:options]`` names them.  Other packages add theirs the same
way (see :mod:`framedclient.codecs.plugin`).

Cheap on purpose: each plugin names its factory by dotted path, imported
only when that codec is built.
"""

from framedclient.codecs.plugin import CodecPlugin

_MAX_FRAME = "max-frame=BYTES"

fc1 = CodecPlugin(
    "fc1",
    "the reference protocol: u32 length, u64 ID, u8 kind (default)",
    _MAX_FRAME,
    "framedclient.codecs.builtin.fc1",
)

lines = CodecPlugin(
    "lines",
    "text lines, replies in order",
    "delimiter=crlf|lf|nul," + _MAX_FRAME,
    "framedclient.codecs.builtin.lines",
)

netstring = CodecPlugin(
    "netstring",
    "netstrings, replies in order",
    _MAX_FRAME,
    "framedclient.codecs.builtin.netstring",
)

redis = CodecPlugin(
    "redis",
    "Redis RESP2, replies in order (bodies are RESP commands)",
    _MAX_FRAME,
    "framedclient.codecs.builtin.redis",
)

length = CodecPlugin(
    "length",
    "a length field, then a header with the request ID (and a kind field), "
    "then the body; e.g. length:size=2,order=little,header=8,id-size=4,"
    "kind-offset=4 (see docs/gateway.md for the byte diagram)",
    "size=1|2|3|4|8,order=big|little,adjust=N,header=BYTES,id-offset=N,"
    "id-size=1|2|4|8,kind-offset=N,kind-size=1|2|4|8,"
    "kinds=NAME:VALUE;NAME:VALUE...," + _MAX_FRAME,
    "framedclient.codecs.builtin.length",
)

memcache_binary = CodecPlugin(
    "memcache-binary",
    "memcached's binary protocol, opaque as the ID: a request body is the "
    "key of a GET, the reply the 4-byte flags then the value",
    _MAX_FRAME,
    "framedclient.codecs.builtin.memcache_binary",
)

dns = CodecPlugin(
    "dns",
    "DNS over TCP: u16 length, 16-bit ID, RCODE as the error code (bodies "
    "are the message after the 12-byte header)",
    _MAX_FRAME,
    "framedclient.codecs.builtin.dns",
)
