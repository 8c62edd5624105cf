"""A gRPC origin for tests/grpc_e2e_test.ts, on grpcio (the reference C-core implementation).

Usage: server.py ADDRESS PORT CERT KEY

Serves the service wstest.Echo over TLS with raw-bytes messages (no generated code):
  Unary         answers b"unary:" + the request
  Bidi          answers every request message m with b"bidi:" + m, as each arrives
  ServerStream  the request is b"COUNT SIZE": COUNT messages of SIZE bytes (see stream_message)
  Missing       fails with NOT_FOUND and a message (a trailers-only answer)
  Compressed    answers like Unary, its reply gzip-compressed (the request is, too, when the
                client compresses)
Prints "ready" once listening; runs until killed.
"""
import sys
from concurrent import futures

import grpc


_patterns = {}


def stream_message(index, size):
    """Message `index` of a server stream: its index as 8 decimal digits, then a byte pattern
    (one of 256, made once each)."""
    key = (index & 0xFF, size)
    body = _patterns.get(key)
    if body is None:
        body = _patterns[key] = bytes((index * 7 + k) & 0xFF for k in range(max(0, size - 8)))
    return (b"%08d" % index + body)[:size]


def unary(request, context):
    return b"unary:" + request


def bidi(requests, context):
    for message in requests:
        yield b"bidi:" + message


def server_stream(request, context):
    count, size = (int(x) for x in request.split())
    for i in range(count):
        yield stream_message(i, size)


def compressed(request, context):
    context.set_compression(grpc.Compression.Gzip)
    return b"unary:" + request


def missing(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such key: " + request.decode("utf-8", "replace"))


def main():
    address, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Missing": grpc.unary_unary_rpc_method_handler(missing),
        "Compressed": grpc.unary_unary_rpc_method_handler(compressed),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("wstest.Echo", handlers),))
    with open(cert, "rb") as c, open(key, "rb") as k:
        credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
    server.add_secure_port(f"{address}:{port}", credentials)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
