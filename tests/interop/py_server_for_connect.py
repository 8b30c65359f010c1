#!/usr/bin/env python3
"""Interop: `wsline connect` against a `websockets` server (Python).

Usage: .cache/venv/bin/python tests/interop/py_server_for_connect.py

  WSLINE_BIN   path of the wsline binary (default target/release/wsline)

Runs a websockets server on 127.0.0.1:0 whose behaviour depends on the path:
  /echo/ID                echo; records messages, headers, subprotocol, close code
  /close/CODE/REASON/ID   sends one text message, then closes with CODE REASON
  /http/STATUS            answers the upgrade with a plain HTTP STATUS response
and drives `wsline connect URL` as a subprocess against it. Last line:
`python connect interop: N passed, M failed`; exit status 1 if anything failed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from urllib.parse import quote, unquote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import ConnectProc, Runner, check_bin, WSLINE_BIN  # noqa: E402

import websockets  # noqa: E402
from websockets.asyncio.server import serve  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

EXIT_TIMEOUT = 15


class Session:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.headers = None
        self.subprotocol = None
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        # (code received from the client or None, reason, closing handshake completed?)
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()


def make_certs(directory: str) -> tuple[str, str, str] | str:
    """A test CA and a server certificate for 127.0.0.1/localhost signed by it.

    Returns (ca.pem, server.pem, server.key), or a reason string if openssl is unavailable.
    """
    openssl = shutil.which("openssl")
    if not openssl:
        return "openssl not found"
    d = lambda name: os.path.join(directory, name)  # noqa: E731
    with open(d("ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", d("ca.key"), "-out", d("ca.pem"), "-days", "2",
         "-subj", "/CN=wsline interop test CA"],
        [openssl, "req", *ec, "-keyout", d("server.key"), "-out", d("server.csr"), "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", d("server.csr"), "-CA", d("ca.pem"), "-CAkey", d("ca.key"),
         "-CAcreateserial", "-out", d("server.pem"), "-days", "2", "-extfile", d("ext.cnf")],
    ]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[:3])} failed: {r.stderr.decode(errors='replace')[-500:]}")
    return d("ca.pem"), d("server.pem"), d("server.key")


class TestServer:
    def __init__(self, subprotocols=None, ssl_context=None):
        self.subprotocols = subprotocols
        self.ssl_context = ssl_context
        self.sessions: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self.server = None
        self.url = ""

    def new_id(self) -> str:
        sid = f"s{next(self._ids)}"
        self.sessions[sid] = Session()
        return sid

    def process_request(self, connection, request):
        m = re.fullmatch(r"/http/(\d{3})", request.path)
        if m:
            return connection.respond(int(m.group(1)), "this is not a WebSocket endpoint\n")
        return None

    async def handler(self, ws):
        path = ws.request.path
        m = re.fullmatch(r"/close/(\d+)/([^/]*)/(\w+)", path)
        sid = m.group(3) if m else path.rsplit("/", 1)[-1]
        sess = self.sessions.get(sid)
        if sess is None:
            await ws.close(1011, f"unknown session path {path}")
            return
        sess.headers = ws.request.headers
        sess.subprotocol = ws.subprotocol
        sess.opened.set_result(True)
        try:
            if m:
                code, reason = int(m.group(1)), unquote(m.group(2))
                await ws.send("server says bye")
                await ws.close(code, reason)
            else:
                # Receiving and echoing are decoupled so that a send stuck on a closing
                # connection never delays recording what the client sent.
                queue: asyncio.Queue = asyncio.Queue()

                async def echo():
                    while True:
                        msg = await queue.get()
                        try:
                            await ws.send(msg)
                        except ConnectionClosed:
                            return
                sender = asyncio.create_task(echo())
                try:
                    while True:
                        try:
                            msg = await ws.recv()
                        except ConnectionClosed:
                            break
                        sess.messages.append(msg)
                        queue.put_nowait(msg)
                finally:
                    sender.cancel()
            await ws.wait_closed()
        finally:
            if not sess.closed.done():
                sess.closed.set_result((ws.close_code, ws.close_reason, ws.protocol.close_rcvd is not None))

    async def __aenter__(self):
        self.server = await serve(
            self.handler, "127.0.0.1", 0,
            process_request=self.process_request,
            subprotocols=self.subprotocols,
            max_size=16 * 1024 * 1024,
            close_timeout=10,
            ssl=self.ssl_context,
        )
        host, port = self.server.sockets[0].getsockname()[:2]
        self.url = f"{'wss' if self.ssl_context else 'ws'}://{host}:{port}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        try:
            await asyncio.wait_for(self.server.wait_closed(), 15)
        except TimeoutError:
            pass


async def closed_info(sess: Session, proc: ConnectProc, timeout: float = 10):
    try:
        return await asyncio.wait_for(asyncio.shield(sess.closed), timeout)
    except TimeoutError:
        raise AssertionError(f"server connection not closed within {timeout}s\n{proc.stderr_block()}")


async def main() -> int:
    r = Runner("python connect interop")
    err = check_bin()
    if err:
        r.fail("wsline binary", err)
        return r.finish()
    print(f"wsline: {WSLINE_BIN}; websockets {websockets.__version__}", flush=True)

    async with TestServer() as srv:
        print(f"server: {srv.url}", flush=True)

        async def run_connect(url, *args) -> ConnectProc:
            return await ConnectProc(url, *args).start()

        # --- lines in, same lines out ------------------------------------
        async def lines_roundtrip():
            sid = srv.new_id()
            sess = srv.sessions[sid]
            lines = ["hello", "", "h\u00e9llo w\u00f6rld \u2014 \u20ac \U0001F600 \u65e5\u672c\u8a9e",
                     "  leading and trailing spaces  ", "tab\tinside", "x" * 70000]
            last = "last line without newline \u00fc"
            p = await run_connect(f"{srv.url}/echo/{sid}")
            try:
                for i, line in enumerate(lines):
                    await p.write(line.encode() + b"\n")
                    got = await p.readline()
                    assert got is not None, f"stdout closed before echo of line {i}\n{p.stderr_block()}"
                    assert got == line, (f"line {i}: sent {line[:60]!r} (len {len(line)}), "
                                         f"printed {got[:60]!r} (len {len(got)})")
                await p.write(last.encode())
                await p.close_stdin()
                rc, rest = await p.wait(EXIT_TIMEOUT)
                code, reason, handshake_done = await closed_info(sess, p)
                assert sess.messages[:len(lines)] == lines, \
                    f"server received {len(sess.messages)} messages, not the lines sent"
                assert sess.messages[len(lines):] == [last], \
                    f"last line without newline: server received {sess.messages[len(lines):]!r}, expected [{last!r}]"
                assert all(isinstance(m, str) for m in sess.messages), "lines must be sent as text messages"
                # the echo of the last line races with the closing handshake; if printed it must be exact
                assert rest in ([], [last]), f"unexpected stdout after the last echo: {rest!r}"
                assert code == 1000, f"server saw close code {code} ({reason!r}) on stdin EOF, expected 1000"
                assert rc == 0, f"exit status {rc} after stdin EOF, expected 0\n{p.stderr_block()}"
            finally:
                await p.kill()
        await r.run("lines in -> same lines out (empty, UTF-8, 70000 B, last w/o newline); EOF -> close 1000, exit 0",
                    lines_roundtrip, timeout=60)

        async def crlf():
            sid = srv.new_id()
            sess = srv.sessions[sid]
            p = await run_connect(f"{srv.url}/echo/{sid}")
            try:
                await p.write(b"windows line\r\n")
                got = await p.readline()
                assert got == "windows line", f"CRLF line printed as {got!r}, expected 'windows line'"
                await p.close_stdin()
                rc, _ = await p.wait(EXIT_TIMEOUT)
                assert sess.messages == ["windows line"], f"server received {sess.messages!r}"
                assert rc == 0, f"exit status {rc}\n{p.stderr_block()}"
            finally:
                await p.kill()
        await r.run("CRLF line ending stripped", crlf)

        async def burst():
            sid = srv.new_id()
            sess = srv.sessions[sid]
            lines = [f"burst line {i} \u00e9\u20ac" for i in range(2000)]
            p = await run_connect(f"{srv.url}/echo/{sid}")
            try:
                async def feed():  # stdout is read meanwhile (in p.wait), so no pipe can fill up
                    await p.write("".join(l + "\n" for l in lines).encode())
                    await p.close_stdin()
                feeder = asyncio.create_task(feed())
                rc, out = await p.wait(30)
                await asyncio.wait_for(feeder, 5)
                code, reason, _ = await closed_info(sess, p)
                assert sess.messages == lines, (f"server received {len(sess.messages)} of {len(lines)} lines "
                                                f"(or out of order)")
                # websockets answers the client's Close as soon as it arrives, so echoes still queued
                # at the server are dropped: stdout holds an in-order prefix of the lines, not all.
                assert out == lines[:len(out)], "stdout is not an in-order prefix of the lines sent"
                assert code == 1000, f"close code {code}, expected 1000"
                assert rc == 0, f"exit status {rc}\n{p.stderr_block()}"
            finally:
                await p.kill()
        await r.run("2000 lines written at once, then EOF: all sent in order", burst, timeout=60)

        async def immediate_eof():
            sid = srv.new_id()
            sess = srv.sessions[sid]
            p = await run_connect(f"{srv.url}/echo/{sid}")
            try:
                await p.close_stdin()
                rc, out = await p.wait(EXIT_TIMEOUT)
                code, reason, _ = await closed_info(sess, p)
                assert sess.messages == [], f"server received {sess.messages!r}, expected nothing"
                assert out == [], f"unexpected stdout {out!r}"
                assert code == 1000, f"close code {code}, expected 1000"
                assert rc == 0, f"exit status {rc}\n{p.stderr_block()}"
            finally:
                await p.kill()
        await r.run("empty stdin: close 1000, exit 0", immediate_eof)

        # --- server-initiated close ---------------------------------------
        async def server_close(code: int, reason: str, expect_ok: bool):
            sid = srv.new_id()
            sess = srv.sessions[sid]
            p = await run_connect(f"{srv.url}/close/{code}/{quote(reason)}/{sid}")
            try:
                # stdin stays open: wsline must notice the close by itself
                rc, out = await p.wait(EXIT_TIMEOUT)
                _, _, handshake_done = await closed_info(sess, p)
                assert out == ["server says bye"], f"stdout {out!r}, expected ['server says bye']"
                want = f"closed: {code} {reason}".rstrip()
                lines = [l.strip() for l in p.stderr.splitlines()]
                assert any(want in l for l in lines), f"stderr lacks {want!r}\n{p.stderr_block()}"
                assert handshake_done, "wsline did not answer the server's Close frame"
                if expect_ok:
                    assert rc == 0, f"exit status {rc} after close {code}, expected 0\n{p.stderr_block()}"
                else:
                    assert rc != 0, f"exit status 0 after close {code}, expected non-zero\n{p.stderr_block()}"
            finally:
                await p.kill()

        await r.run("server closes 1000: 'closed: 1000' on stderr, exit 0",
                    lambda: server_close(1000, "", True))
        await r.run("server closes 1000 'done': 'closed: 1000 done', exit 0",
                    lambda: server_close(1000, "done", True))
        await r.run("server closes 1001: exit 0", lambda: server_close(1001, "going away", True))
        await r.run("server closes 4000 'bye': 'closed: 4000 bye', exit non-zero",
                    lambda: server_close(4000, "bye", False))
        await r.run("server closes 1011: exit non-zero", lambda: server_close(1011, "oops", False))

        # --- refused handshakes -------------------------------------------
        async def refused(status: int):
            p = await run_connect(f"{srv.url}/http/{status}")
            try:
                await p.close_stdin()
                rc, out = await p.wait(EXIT_TIMEOUT)
                assert rc != 0, f"exit status 0 for an HTTP {status} answer, expected non-zero"
                assert re.search(rf"\b{status}\b", p.stderr), \
                    f"stderr does not mention status {status}\n{p.stderr_block()}"
                assert out == [], f"unexpected stdout {out!r}"
            finally:
                await p.kill()
        for status in (200, 403, 404):
            await r.run(f"HTTP {status} instead of 101: non-zero exit, status in stderr",
                        lambda status=status: refused(status))

        async def nothing_listening():
            import socket
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()  # nothing listens there now
            p = await run_connect(f"ws://127.0.0.1:{port}/")
            try:
                rc, _ = await p.wait(EXIT_TIMEOUT)
                assert rc != 0, "exit status 0 although the connection was refused"
                assert p.stderr.strip(), "no error message on stderr for a refused connection"
            finally:
                await p.kill()
        await r.run("connection refused: non-zero exit, error on stderr", nothing_listening)

        # --- options --------------------------------------------------------
        async def header():
            sid = srv.new_id()
            sess = srv.sessions[sid]
            p = await run_connect(f"{srv.url}/echo/{sid}", "--header", "X-Test: 1",
                                  "--header", "X-Other: two words")
            try:
                await asyncio.wait_for(asyncio.shield(sess.opened), 10)
                await p.close_stdin()
                rc, _ = await p.wait(EXIT_TIMEOUT)
                assert sess.headers.get("X-Test") == "1", \
                    f"X-Test header at the server: {sess.headers.get('X-Test')!r}, expected '1'"
                assert sess.headers.get("X-Other") == "two words", \
                    f"X-Other header at the server: {sess.headers.get('X-Other')!r}"
                assert rc == 0, f"exit status {rc}\n{p.stderr_block()}"
            finally:
                await p.kill()
        await r.run("--header 'X-Test: 1' reaches the server", header)

    # A second server that requires a subprotocol.
    async with TestServer(subprotocols=["chat"]) as psrv:
        async def protocol():
            sid = psrv.new_id()
            sess = psrv.sessions[sid]
            p = await ConnectProc(f"{psrv.url}/echo/{sid}", "--protocol", "superchat",
                                  "--protocol", "chat").start()
            try:
                await asyncio.wait_for(asyncio.shield(sess.opened), 10)
                offered = sess.headers.get_all("Sec-WebSocket-Protocol")
                offered = [x.strip() for h in offered for x in h.split(",")]
                assert offered == ["superchat", "chat"], f"client offered {offered!r}, expected ['superchat', 'chat']"
                assert sess.subprotocol == "chat", f"negotiated {sess.subprotocol!r}, expected 'chat'"
                await p.write(b"with protocol\n")
                assert await p.readline() == "with protocol"
                await p.close_stdin()
                rc, _ = await p.wait(EXIT_TIMEOUT)
                assert rc == 0, f"exit status {rc}\n{p.stderr_block()}"
            finally:
                await p.kill()
        await r.run("--protocol superchat --protocol chat: offered in order, 'chat' negotiated", protocol)

    # TLS: a server certificate signed by a test CA (--ca), unknown CA, --insecure.
    with tempfile.TemporaryDirectory(prefix="wsline-interop-tls.") as tmp:
        try:
            certs = make_certs(tmp)
        except (AssertionError, subprocess.TimeoutExpired) as e:
            r.fail("TLS: make test certificates", str(e))
            certs = None
        if isinstance(certs, str):
            for name in ("wss with --ca", "wss, unknown CA", "wss --insecure"):
                r.skip(name, certs)
        elif certs is not None:
            ca_pem, cert_pem, key_pem = certs
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert_pem, key_pem)
            async with TestServer(ssl_context=ctx) as tsrv:
                async def wss_ok(*args):
                    sid = tsrv.new_id()
                    sess = tsrv.sessions[sid]
                    p = await ConnectProc(f"{tsrv.url}/echo/{sid}", *args).start()
                    try:
                        await p.write("über TLS\n".encode())
                        got = await p.readline()
                        assert got == "über TLS", f"echo over wss: {got!r}"
                        await p.close_stdin()
                        rc, _ = await p.wait(EXIT_TIMEOUT)
                        code, _, _ = await closed_info(sess, p)
                        assert code == 1000, f"close code {code}, expected 1000"
                        assert rc == 0, f"exit status {rc}\n{p.stderr_block()}"
                    finally:
                        await p.kill()

                async def wss_untrusted():
                    p = await ConnectProc(f"{tsrv.url}/echo/none").start()
                    try:
                        await p.close_stdin()
                        rc, out = await p.wait(EXIT_TIMEOUT)
                        assert rc != 0, "exit status 0 although the server certificate is from an unknown CA"
                        assert p.stderr.strip(), "no error message on stderr"
                        assert out == [], f"unexpected stdout {out!r}"
                    finally:
                        await p.kill()

                await r.run("wss with --ca CA.pem: echo, close 1000, exit 0", lambda: wss_ok("--ca", ca_pem))
                await r.run("wss, unknown CA (no --ca): refused, non-zero exit", wss_untrusted)
                await r.run("wss --insecure: accepted without verification", lambda: wss_ok("--insecure"))

    return r.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
