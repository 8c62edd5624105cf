"""One unary call on a plain-text (h2c) channel, for tests/grpc_e2e_test.ts: the target has no
server, so the proxy answers. Prints the call's status code number and details as JSON.

Usage: unreachable_client.py TARGET
"""
import json
import sys

import grpc


def main():
    channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.enable_http_proxy", 0)])
    call = channel.unary_unary("/wstest.Echo/Unary")
    try:
        call(b"\x0a\x01x", timeout=20)
        print(json.dumps({"code": 0, "details": ""}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().value[0], "details": e.details()}))
    channel.close()


main()
