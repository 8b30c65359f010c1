"""Shared helpers for the Python interop tests (plain asyncio, no pytest).

The tests drive the real `wsline` binary (env WSLINE_BIN, default
<repo>/target/release/wsline) against the independent `websockets` library.
Every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
import time
import traceback

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WSLINE_BIN = os.environ.get("WSLINE_BIN") or os.path.join(REPO_ROOT, "target", "release", "wsline")

LISTEN_RE = re.compile(r"listening on (ws://(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):(\d+))")

# Bounds (seconds). Generous: a debug build on a loaded 2-core CI box is slow.
READY_TIMEOUT = float(os.environ.get("WSLINE_READY_TIMEOUT", "30"))
EXIT_TIMEOUT = 15.0


def check_bin() -> str | None:
    """None if WSLINE_BIN is usable, else an error message."""
    if not (os.path.isfile(WSLINE_BIN) and os.access(WSLINE_BIN, os.X_OK)):
        return (f"wsline binary not found or not executable: {WSLINE_BIN}\n"
                "build it (cargo build --release --bin wsline) or set WSLINE_BIN")
    return None


def describe_mismatch(expected, got) -> str:
    """Short human description of why an echoed message differs."""
    if type(expected) is not type(got):
        return (f"type mismatch: sent {type(expected).__name__} ({len(expected)}), "
                f"got {type(got).__name__} ({len(got)})")
    if len(expected) != len(got):
        unit = "chars" if isinstance(expected, str) else "bytes"
        return f"length mismatch: sent {len(expected)} {unit}, got {len(got)}"
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return f"content differs at index {i}: sent {expected[i:i+16]!r}..., got {got[i:i+16]!r}..."
    return "equal"


# One pattern mixing 1-, 2-, 3- and 4-byte UTF-8 sequences.
_TEXT_PATTERN = "ws-line: a\u00e9\u00fc \u20ac\u2603 \U0001F600\U0001F680 \u65e5\u672c "


def make_text(nbytes: int) -> str:
    """A str whose UTF-8 encoding is exactly `nbytes` long, multi-byte content included."""
    pat_len = len(_TEXT_PATTERN.encode())
    reps = nbytes // pat_len
    parts = [_TEXT_PATTERN * reps]
    size = reps * pat_len
    for ch in _TEXT_PATTERN:
        n = len(ch.encode())
        if size + n > nbytes:
            break
        parts.append(ch)
        size += n
    parts.append("x" * (nbytes - size))
    s = "".join(parts)
    assert len(s.encode()) == nbytes, (len(s.encode()), nbytes)
    return s


def make_binary(nbytes: int, seed: int = 0) -> bytes:
    import random

    return random.Random(nbytes * 7919 + seed).randbytes(nbytes)


class Runner:
    """Runs named async checks with a time bound each, prints ok/FAIL lines and a summary."""

    def __init__(self, label: str):
        self.label = label
        self.passed = 0
        self.skipped = 0
        self.failures: list[tuple[str, str]] = []

    async def run(self, name: str, fn, timeout: float = 60.0) -> bool:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await fn()
        except TimeoutError:
            msg = f"timed out after {timeout:.0f}s"
        except AssertionError as e:
            msg = str(e) or "assertion failed"
        except Exception as e:  # noqa: BLE001 - report anything
            msg = f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exc(limit=6))
        else:
            self.passed += 1
            print(f"ok    {name} ({time.monotonic() - t0:.2f}s)", flush=True)
            return True
        self.failures.append((name, msg))
        print(f"FAIL  {name} ({time.monotonic() - t0:.2f}s)", flush=True)
        for line in msg.rstrip().splitlines():
            print(f"      {line}", flush=True)
        return False

    def fail(self, name: str, msg: str) -> None:
        self.failures.append((name, msg))
        print(f"FAIL  {name}", flush=True)
        for line in msg.rstrip().splitlines():
            print(f"      {line}", flush=True)

    def skip(self, name: str, reason: str) -> None:
        self.skipped += 1
        print(f"skip  {name} ({reason})", flush=True)

    def finish(self) -> int:
        if self.failures:
            print(f"\n{len(self.failures)} failure(s):", flush=True)
            for name, msg in self.failures:
                print(f"  - {name}: {msg.strip().splitlines()[0] if msg.strip() else ''}", flush=True)
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        print(f"{self.label}: {self.passed} passed, {len(self.failures)} failed{skipped}", flush=True)
        return 1 if self.failures else 0


class EchoServer:
    """`wsline echo --listen 127.0.0.1:0 ...` as a child process."""

    def __init__(self, *extra_args: str):
        self.args = [WSLINE_BIN, "echo", "--listen", "127.0.0.1:0", *extra_args]
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self._stderr = tempfile.TemporaryFile()
        self._extra_stdout: list[bytes] = []
        self._drain: asyncio.Task | None = None

    async def start(self) -> "EchoServer":
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=self._stderr)
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), READY_TIMEOUT)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"no 'listening on' line within {READY_TIMEOUT:.0f}s from: "
                                 f"{' '.join(self.args)}\n{self.stderr_tail()}")
        text = line.decode(errors="replace").rstrip("\r\n")
        m = LISTEN_RE.fullmatch(text)
        if not m:
            rc = self.proc.returncode
            await self.kill()
            raise AssertionError(f"first stdout line is {text!r}, expected 'listening on ws://IP:PORT' "
                                 f"(exit status {rc})\n{self.stderr_tail()}")
        self.url = m.group(1)
        if int(m.group(2)) == 0:
            raise AssertionError(f"server reports port 0 instead of the bound port: {text!r}")
        self._drain = asyncio.create_task(self._drain_stdout())
        return self

    async def _drain_stdout(self) -> None:
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            self._extra_stdout.append(line)

    def stderr_lines(self, n: int = 20) -> list[str]:
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace").splitlines()[-n:]
        except ValueError:  # already closed
            return []

    def stderr_tail(self, n: int = 20) -> str:
        lines = self.stderr_lines(n)
        return "server stderr (tail):\n" + "\n".join("  " + l for l in lines) if lines else "server stderr: (empty)"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def terminate(self, timeout: float = EXIT_TIMEOUT) -> int:
        """SIGTERM, then wait (bounded) for exit; returns the exit status (-9 if it had to be killed)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"server did not exit within {timeout:.0f}s of SIGTERM\n{self.stderr_tail()}")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                pass
        if self._drain is not None:
            self._drain.cancel()


class ConnectProc:
    """`wsline connect URL ...` as a child process with piped stdio."""

    def __init__(self, url: str, *extra_args: str):
        self.args = [WSLINE_BIN, "connect", url, *extra_args]
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr_chunks: list[bytes] = []
        self._stderr_task: asyncio.Task | None = None

    async def start(self) -> "ConnectProc":
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024)
        self._stderr_task = asyncio.create_task(self._read_stderr())
        return self

    async def _read_stderr(self) -> None:
        while True:
            chunk = await self.proc.stderr.read(65536)
            if not chunk:
                return
            self._stderr_chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr_chunks).decode(errors="replace")

    def stderr_block(self) -> str:
        s = self.stderr.strip()
        return "wsline stderr:\n" + "\n".join("  " + l for l in s.splitlines()[-20:]) if s else "wsline stderr: (empty)"

    async def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        self.proc.stdin.close()
        try:
            await self.proc.stdin.wait_closed()
        except (BrokenPipeError, ConnectionResetError):
            pass

    async def readline(self, timeout: float = 10.0) -> str | None:
        """One stdout line without its newline; None on EOF."""
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"no stdout line within {timeout:.0f}s\n{self.stderr_block()}")
        if not line:
            return None
        return line.decode("utf-8", errors="strict").rstrip("\n")

    async def wait(self, timeout: float = EXIT_TIMEOUT) -> tuple[int, list[str]]:
        """Wait (bounded) for exit; returns (status, remaining stdout lines)."""
        try:
            rest = await asyncio.wait_for(self.proc.stdout.read(), timeout)
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"wsline connect did not exit within {timeout:.0f}s\n{self.stderr_block()}")
        if self._stderr_task is not None:
            try:
                await asyncio.wait_for(self._stderr_task, 5)
            except TimeoutError:
                pass
        text = rest.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return rc, lines

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                pass
        if self._stderr_task is not None and not self._stderr_task.done():
            self._stderr_task.cancel()
