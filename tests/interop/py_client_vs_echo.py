#!/usr/bin/env python3
"""Interop: the `websockets` client (Python) against `wsline echo`.

Usage: .cache/venv/bin/python tests/interop/py_client_vs_echo.py [--expect-compression]

  WSLINE_BIN            path of the wsline binary (default target/release/wsline)
  --expect-compression  also require permessage-deflate to be negotiated
                        (the websockets client always offers it)

Starts `wsline echo --listen 127.0.0.1:0` itself. Last line:
`python interop: N passed, M failed`; exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    EchoServer, Runner, check_bin, describe_mismatch, make_binary, make_text, WSLINE_BIN,
)

import websockets  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

KIB = 1024
MIB = 1024 * 1024
SIZES = [0, 1, 125, 126, 65535, 65536, 1 * MIB, 4 * MIB]
MAX_SIZE = 16 * MIB


def size_name(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    return f"{n} B"


def ws_connect(url: str, **kw):
    kw.setdefault("max_size", MAX_SIZE)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("close_timeout", 10)
    return connect(url, **kw)


async def echo_one(ws, payload) -> None:
    await ws.send(payload)
    got = await ws.recv()
    if got != payload or type(got) is not type(payload):
        raise AssertionError(describe_mismatch(payload, got))


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--expect-compression", action="store_true",
                    help="require permessage-deflate to be negotiated")
    opts = ap.parse_args()
    r = Runner("python interop")
    err = check_bin()
    if err:
        r.fail("wsline binary", err)
        return r.finish()
    print(f"wsline: {WSLINE_BIN}; websockets {websockets.__version__}; "
          f"compression check: {'on' if opts.expect_compression else 'off'}", flush=True)

    server = EchoServer()
    try:
        await server.start()
    except AssertionError as e:
        r.fail("start wsline echo", str(e))
        return r.finish()
    print(f"server: {server.url}", flush=True)
    url = server.url

    try:
        # --- handshake / extensions -------------------------------------
        async def negotiation():
            async with ws_connect(url) as ws:
                ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                print(f"      negotiated extensions: {ext or '(none)'}", flush=True)
                if opts.expect_compression:
                    assert "permessage-deflate" in ext, \
                        f"permessage-deflate not negotiated (Sec-WebSocket-Extensions: {ext!r})"
                assert ws.subprotocol is None, f"server chose subprotocol {ws.subprotocol!r} though none offered"
                await echo_one(ws, "hello")
        await r.run("handshake" + (" + permessage-deflate negotiated" if opts.expect_compression else ""),
                    negotiation)

        async def any_path():
            async with ws_connect(url + "/some/deep/path?x=1&y=%20z") as ws:
                await echo_one(ws, "path ok")
                await echo_one(ws, b"\x00\x01path")
        await r.run("upgrade accepted on any path", any_path)

        # --- exact echo, both types, boundary sizes ----------------------
        for kind in ("text", "binary"):
            for n in SIZES:
                payload = make_text(n) if kind == "text" else make_binary(n)

                async def one(payload=payload):
                    async with ws_connect(url) as ws:
                        await echo_one(ws, payload)
                await r.run(f"echo {kind} {size_name(n)}", one, timeout=60)

        async def pipelined():
            msgs = []
            for n in SIZES:
                msgs.append(make_text(n))
                msgs.append(make_binary(n, seed=1))
            async with ws_connect(url) as ws:
                async def sender():
                    for m in msgs:
                        await ws.send(m)
                send_task = asyncio.create_task(sender())
                for i, m in enumerate(msgs):
                    got = await ws.recv()
                    if got != m or type(got) is not type(m):
                        raise AssertionError(f"message #{i}: {describe_mismatch(m, got)}")
                await send_task
        await r.run("pipelined text+binary, all sizes, one connection, order kept", pipelined, timeout=90)

        async def fragmented():
            # the client sends one message as several frames; the echo must be the whole message
            async with ws_connect(url) as ws:
                parts = [make_text(1000), make_text(70000), "", "end\u20ac"]
                await ws.send(iter(parts))
                got = await ws.recv()
                exp = "".join(parts)
                assert got == exp, "fragmented text: " + describe_mismatch(exp, got)
                bparts = [make_binary(5), make_binary(130000), make_binary(1)]
                await ws.send(iter(bparts))
                got = await ws.recv()
                exp_b = b"".join(bparts)
                assert got == exp_b, "fragmented binary: " + describe_mismatch(exp_b, got)
        await r.run("fragmented messages echoed whole", fragmented)

        async def ping():
            async with ws_connect(url) as ws:
                pong = await ws.ping(b"are you there")
                await asyncio.wait_for(pong, 10)
                await echo_one(ws, "after ping")
        await r.run("ping answered with pong", ping)

        async def concurrent():
            nconn, nmsg = 16, 25

            async def client(i: int):
                rnd = random.Random(i)
                async with ws_connect(url) as ws:
                    for j in range(nmsg):
                        n = rnd.choice([0, 1, 125, 126, 1000, 65535, 65536, 200000])
                        payload = make_text(n) if (i + j) % 2 else make_binary(n, seed=i * 1000 + j)
                        await ws.send(payload)
                        got = await ws.recv()
                        if got != payload or type(got) is not type(payload):
                            raise AssertionError(f"conn {i} msg {j}: {describe_mismatch(payload, got)}")
            results = await asyncio.gather(*(client(i) for i in range(nconn)), return_exceptions=True)
            errs = [f"conn {i}: {e!r}" for i, e in enumerate(results) if isinstance(e, BaseException)]
            assert not errs, f"{len(errs)}/{nconn} connections failed:\n" + "\n".join(errs[:5])
        await r.run("16 concurrent connections x 25 messages", concurrent, timeout=120)

        async def client_close():
            # client-initiated close: the server must complete the closing handshake
            async with ws_connect(url) as ws:
                await echo_one(ws, "bye soon")
                await ws.close(1000, "client done")
                assert ws.protocol.close_rcvd is not None, "server did not answer the Close frame"
                assert ws.close_code == 1000, f"server answered close with code {ws.close_code}, expected 1000"
        await r.run("client close 1000 answered by server", client_close)

        # --- other server instances ---------------------------------------
        async def subprotocol():
            s2 = await EchoServer("--protocol", "chat", "--protocol", "superchat").start()
            try:
                async with ws_connect(s2.url, subprotocols=["superchat", "chat"]) as ws:
                    assert ws.subprotocol == "chat", \
                        f"offered [superchat, chat] to a server preferring [chat, superchat]: got {ws.subprotocol!r}"
                    await echo_one(ws, "proto")
                async with ws_connect(s2.url, subprotocols=["superchat"]) as ws:
                    assert ws.subprotocol == "superchat", f"offered [superchat]: got {ws.subprotocol!r}"
                    await echo_one(ws, b"proto")
                rc = await s2.terminate()
                assert rc == 0, f"server with --protocol exited {rc} on SIGTERM\n{s2.stderr_tail()}"
            finally:
                await s2.kill()
        await r.run("subprotocol: server preference order (chat over superchat)", subprotocol)

        async def no_compression():
            s3 = await EchoServer("--no-compression").start()
            try:
                async with ws_connect(s3.url) as ws:  # the client offers permessage-deflate
                    ext = ws.response.headers.get("Sec-WebSocket-Extensions")
                    assert ext is None, f"--no-compression server negotiated extensions: {ext!r}"
                    await echo_one(ws, make_text(70000))
                rc = await s3.terminate()
                assert rc == 0, f"--no-compression server exited {rc} on SIGTERM\n{s3.stderr_tail()}"
            finally:
                await s3.kill()
        await r.run("--no-compression: no extension negotiated", no_compression)

        # --- graceful shutdown (last: it stops the main server) ----------
        async def shutdown():
            conns = [await ws_connect(url).__aenter__() for _ in range(3)]
            try:
                for i, ws in enumerate(conns):
                    await echo_one(ws, f"conn {i} alive")
                rc = await server.terminate()
                for i, ws in enumerate(conns):
                    try:
                        async with asyncio.timeout(10):
                            await ws.recv()
                        raise AssertionError(f"conn {i}: got a message instead of a close after SIGTERM")
                    except ConnectionClosed:
                        pass
                    assert ws.protocol.close_rcvd is not None, \
                        f"conn {i}: connection dropped without a Close frame after SIGTERM"
                    assert ws.close_code == 1001, \
                        f"conn {i}: close code {ws.close_code} ({ws.close_reason!r}), expected 1001"
                assert rc == 0, f"server exited with status {rc} after SIGTERM\n{server.stderr_tail()}"
            finally:
                for ws in conns:
                    await ws.close()
        await r.run("SIGTERM: clients get close 1001, server exits 0", shutdown, timeout=45)
    finally:
        await server.kill()

    if r.failures and server.stderr_lines():
        print(server.stderr_tail(), flush=True)
    return r.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
