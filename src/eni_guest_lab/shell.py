"""Running commands for the lab: ``ip``, ``nft``, ``sysctl`` and long-lived helper processes.

The lab deliberately shells out to iproute2 and nftables and never packs netlink messages
itself: the agent's kernel layer does (netlink_encode.py, netlink_decode.py), and the
instrument must not share the bugs of the thing it measures. Every failure carries the
command line and its stderr, so a broken test bed can be diagnosed from the test report alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

#: The directory holding ``eni_guest`` and ``eni_guest_lab``: children get it on PYTHONPATH.
SRC_DIR = str(Path(__file__).resolve().parent.parent)


class SimVMError(RuntimeError):
    """A testbed step failed; the message names the command and carries its stderr."""

    def __init__(
        self,
        message: str,
        *,
        cmd: Optional[Sequence[str]] = None,
        returncode: Optional[int] = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.cmd = list(cmd) if cmd is not None else None
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def run(
    cmd: Sequence[str],
    *,
    input: Optional[str] = None,
    check: bool = True,
    timeout: float = 60.0,
    env: Optional[Mapping[str, str]] = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, captured; on failure raise with the command line and its stderr.

    Every testbed failure must be diagnosable from the test report alone, so the message always
    shows what was run (and the batch input, when there was one).
    """
    argv = [str(a) for a in cmd]
    try:
        cp = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except FileNotFoundError as e:
        raise SimVMError(f"{argv[0]}: not found (needed by the testbed)", cmd=argv) from e
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise SimVMError(
            f"timed out after {timeout:g} s: {shlex.join(argv)}\n{err.strip()}",
            cmd=argv,
            stdout=out,
            stderr=err,
        ) from e
    if check and cp.returncode != 0:
        msg = f"command failed (exit {cp.returncode}): {shlex.join(argv)}"
        if input:
            msg += "\n--- input ---\n" + input.rstrip()
        msg += "\n--- stderr ---\n" + (cp.stderr.strip() or "(empty)")
        raise SimVMError(
            msg, cmd=argv, returncode=cp.returncode, stdout=cp.stdout, stderr=cp.stderr
        )
    return cp


def in_ns(
    ns: str,
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60.0,
    env: Optional[Mapping[str, str]] = None,
) -> subprocess.CompletedProcess[str]:
    """:func:`run` inside a network namespace (``ip netns exec``)."""
    return run(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout, env=env)


def ip_batch(ns: str, lines: Iterable[str], *, force: bool = False) -> None:
    """Apply many ``ip`` commands in one process: the testbed builds dozens of objects."""
    text = "".join(f"{line}\n" for line in lines)
    if not text:
        return
    cmd = ["ip", "-n", ns]
    if force:
        cmd.append("-force")
    run([*cmd, "-batch", "-"], input=text, check=not force)


def ip_json(ns: str, args: Sequence[str]) -> list[dict[str, Any]]:
    """``ip -n NS -j ARGS``, decoded."""
    out = run(["ip", "-n", ns, "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def sysctl(ns: str, settings: Mapping[str, Any]) -> None:
    """Set sysctls inside a namespace (``net.*`` keys are per namespace)."""
    if settings:
        args = [f"{k}={v}" for k, v in settings.items()]
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *args])


def nft(ns: str, script: str) -> None:
    """Load an nftables script inside a namespace."""
    run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script)


def child_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment for Python children: eni_guest importable even from an uninstalled tree."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = SRC_DIR + (os.pathsep + path if path else "")
    if extra:
        env.update(extra)
    return env


def stop(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``: the simulator gets a chance to write its stats."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        except OSError:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class LineReader:
    """Read lines from a child's stdout with a deadline (pipes have no timeout of their own)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._buf = b""
        self._eof = False

    def readline(self, timeout: float) -> Optional[str]:
        """One line without its newline; ``None`` on timeout or end of file."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if self._eof or left <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self._eof = True
                continue
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")
