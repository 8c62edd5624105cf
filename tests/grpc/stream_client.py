"""Reads one long server stream of tests/grpc/server.py (bench/grpc_stream.ts): asks ServerStream for
COUNT messages of SIZE bytes and checks each; prints "<messages> <bytes> <seconds>".

Usage: stream_client.py TARGET CA_FILE AUTHORITY PROXY COUNT SIZE   (PROXY "-" for none)
"""
import sys
import time

import grpc

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from server import stream_message  # noqa: E402


def main():
    target, ca_file, authority, proxy = sys.argv[1:5]
    count, size = int(sys.argv[5]), int(sys.argv[6])
    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = [("grpc.ssl_target_name_override", authority), ("grpc.default_authority", authority)]
    options.append(("grpc.http_proxy", f"http://{proxy}") if proxy != "-" else ("grpc.enable_http_proxy", 0))
    received = 0
    total = 0
    start = time.monotonic()
    with grpc.secure_channel(target, credentials, options) as channel:
        call = channel.unary_stream("/wstest.Echo/ServerStream")
        for i, message in enumerate(call(b"%d %d" % (count, size), timeout=600)):
            if message != stream_message(i, size):
                print(f"message {i} differs", file=sys.stderr)
                sys.exit(1)
            received += 1
            total += len(message)
    print(received, total, round(time.monotonic() - start, 2), flush=True)
    sys.exit(0 if received == count else 1)


if __name__ == "__main__":
    main()
