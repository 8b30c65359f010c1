"""`wsline serve` with TLS against Python `websockets` over wss://.

A test CA and a server certificate made with openssl (py_server_for_connect's
make_certs); the hub started with --tls-cert/--tls-key; websockets, trusting
the CA, subscribes and publishes over wss:// (an HTTP/1.1 upgrade over TLS).
Every wait is bounded.

    WSLINE_BIN=target/release/wsline .cache/venv/bin/python tests/interop/py_hub_wss.py
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import sys
import tempfile

from websockets.asyncio.client import connect

from _common import READY_TIMEOUT, EXIT_TIMEOUT, WSLINE_BIN, Runner, check_bin
from py_server_for_connect import make_certs


async def main() -> int:
    r = Runner("py_hub_wss")
    problem = check_bin()
    if problem:
        r.fail("setup", problem)
        return r.finish()
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(tmp)
        if isinstance(certs, str):
            r.fail("setup", certs)
            return r.finish()
        ca, cert, key = certs
        proc = await asyncio.create_subprocess_exec(
            WSLINE_BIN, "serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                line = (await proc.stdout.readline()).decode().strip()
            m = re.fullmatch(r"listening on https://127\.0\.0\.1:(\d+)", line)
            if not m:
                r.fail("startup", f"first line {line!r}, expected 'listening on https://127.0.0.1:PORT'")
                return r.finish()
            port = int(m.group(1))
            context = ssl.create_default_context(cafile=ca)

            async def pubsub():
                async with connect(f"wss://localhost:{port}/ws", ssl=context) as ws:
                    welcome = json.loads(await ws.recv())
                    assert welcome["op"] == "welcome", welcome
                    await ws.send(json.dumps({"op": "subscribe", "channel": "py", "id": 1}))
                    assert json.loads(await ws.recv())["op"] == "subscribed"
                    await ws.send(json.dumps({"op": "publish", "channel": "py", "data": "hé", "id": 2}))
                    got = [json.loads(await ws.recv()), json.loads(await ws.recv())]
                    assert any(m.get("data") == "hé" for m in got), got
                    assert ws.request.headers is not None
            await r.run("websockets over wss:// to the hub: welcome, subscribe, publish", pubsub, timeout=30)

            async def untrusted():
                try:
                    async with connect(f"wss://localhost:{port}/ws", ssl=ssl.create_default_context()):
                        raise AssertionError("connected without trusting the certificate")
                except ssl.SSLCertVerificationError:
                    pass
            await r.run("a client that does not trust the certificate is refused by its own TLS", untrusted,
                        timeout=30)
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(EXIT_TIMEOUT):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
    return r.finish()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(asyncio.run(main()))
