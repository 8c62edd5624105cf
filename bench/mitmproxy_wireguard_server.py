"""The mitmproxy-wireguard side of `deno task bench:dataplane`: mitmproxy-wireguard 0.1.23 (the
library the mitmproxy-wireguard thesis built and measured: boringtun + smoltcp in Rust, driven from
Python's asyncio) serving a TCP echo on every tunneled connection, whatever its port, in this process.
UDP datagrams are dropped. Prints "ready" once the UDP socket is bound; runs until SIGTERM or SIGINT.

    .venv-mitmproxy-wireguard/bin/python bench/mitmproxy_wireguard_server.py PORT PRIVATE_KEY PEER_PUBLIC_KEY

Two quirks of the library, handled here: a stream closed with data or a FIN still unread answers with
a reset, so the echo reads until the client's FIN before it closes; and the process can crash at exit
while the Rust side winds down, so it waits a moment after wait_closed() before it returns.
"""
import asyncio
import signal
import sys

import mitmproxy_wireguard as wg

CHUNK = 65536
connections = 0
failures = 0


async def echo(stream: wg.TcpStream) -> None:
    global connections, failures
    connections += 1
    try:
        while True:
            data = await stream.read(CHUNK)
            if not data:
                break
            stream.write(data)
            await stream.drain()
        # The client's FIN is read: send ours, then close.
        stream.write_eof()
        await stream.drain()
    except Exception as e:  # a reset or a closed tunnel: count it, keep serving
        failures += 1
        print(f"connection failed: {e!r}", file=sys.stderr, flush=True)
    finally:
        stream.close()


def drop_datagram(_data: bytes, _src: tuple[str, int], _dst: tuple[str, int]) -> None:
    pass


async def main(port: int, private_key: str, peer: str) -> None:
    server = await wg.start_server("0.0.0.0", port, private_key, [peer], echo, drop_datagram)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.5)
    print(f"stopped after {connections} connections ({failures} failed)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
