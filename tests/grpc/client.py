"""The gRPC client of tests/grpc_e2e_test.ts, on grpcio: calls the methods of server.py and checks
every reply byte for byte against what the server must have sent.

Usage: client.py TARGET CA_FILE AUTHORITY [PROXY]

TARGET is host:port, CA_FILE the only CA trusted, AUTHORITY the name the TLS certificate is checked
against (and the :authority sent); PROXY (host:port) sends the calls through an HTTP CONNECT proxy.
Prints one JSON object: what each call sent and received (counts and sizes) and whether it matched.
Exits non-zero when a reply differs.
"""
import json
import sys
import threading

import grpc

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from server import stream_message  # noqa: E402

BIDI_MESSAGES = 100
STREAM_COUNT = 2000
STREAM_SIZE = 1000
TIMEOUT = 30


def pattern(seed, size):
    return bytes((seed * 31 + k * 13) & 0xFF for k in range(size))


def main():
    target, ca_file, authority = sys.argv[1], sys.argv[2], sys.argv[3]
    proxy = sys.argv[4] if len(sys.argv) > 4 else None
    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = [("grpc.ssl_target_name_override", authority), ("grpc.default_authority", authority)]
    if proxy:
        options.append(("grpc.http_proxy", f"http://{proxy}"))
    else:
        options.append(("grpc.enable_http_proxy", 0))
    result = {}
    failed = []
    with grpc.secure_channel(target, credentials, options) as channel:
        # Unary: one message each way.
        request = pattern(1, 1500)
        reply = channel.unary_unary("/wstest.Echo/Unary")(request, timeout=TIMEOUT)
        result["unary"] = {"sent": [len(request)], "received": [len(reply)]}
        if reply != b"unary:" + request:
            failed.append("unary")

        # Bidirectional streaming: 100 messages of varied sizes each way, in lockstep: each message
        # is sent only once the reply to the one before came back, so a proxy that held the
        # request stream (or a reply) until its end would stall the call.
        sent = [pattern(i, (i * 37) % 3000) for i in range(BIDI_MESSAGES)]
        answered = threading.Semaphore(0)
        stalled = []

        def lockstep():
            for message in sent:
                yield message
                if not answered.acquire(timeout=10):
                    stalled.append(len(message))
                    return

        replies = []
        for reply in channel.stream_stream("/wstest.Echo/Bidi")(lockstep(), timeout=TIMEOUT):
            replies.append(reply)
            answered.release()
        result["bidi"] = {"sent": [len(m) for m in sent], "received": [len(m) for m in replies]}
        if stalled or replies != [b"bidi:" + m for m in sent]:
            failed.append("bidi")

        # Server streaming: 2,000 messages from one request.
        ask = b"%d %d" % (STREAM_COUNT, STREAM_SIZE)
        streamed = channel.unary_stream("/wstest.Echo/ServerStream")(ask, timeout=TIMEOUT)
        count = 0
        for i, message in enumerate(streamed):
            if message != stream_message(i, STREAM_SIZE):
                failed.append(f"stream message {i}")
                break
            count += 1
        result["stream"] = {"sent": [len(ask)], "received": count, "size": STREAM_SIZE}
        if count != STREAM_COUNT:
            failed.append("stream count")

        # Compressed messages both ways (gzip; a payload that shrinks, so it is sent compressed).
        request = bytes(20000)
        reply = channel.unary_unary("/wstest.Echo/Compressed")(
            request, timeout=TIMEOUT, compression=grpc.Compression.Gzip
        )
        result["compressed"] = {"sent": [len(request)], "received": [len(reply)]}
        if reply != b"unary:" + request:
            failed.append("compressed")

        # A call that fails: NOT_FOUND with a message, in the trailers.
        try:
            channel.unary_unary("/wstest.Echo/Missing")(b"k1", timeout=TIMEOUT)
            failed.append("missing did not fail")
        except grpc.RpcError as e:
            result["missing"] = {"code": e.code().value[0], "details": e.details()}
            if e.code() != grpc.StatusCode.NOT_FOUND or e.details() != "no such key: k1":
                failed.append("missing")
    result["failed"] = failed
    print(json.dumps(result), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
