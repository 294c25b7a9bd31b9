"""Worker processes for the data-parallel engines: started once, driven over loopback sockets.

``Pool.start`` runs ``python -m <module> --worker <index>`` R times (fresh interpreters, so a
worker can set XLA_FLAGS before JAX starts, and nothing depends on how this process was started);
each worker connects back to a listening socket on 127.0.0.1 (port 0: the OS picks a free port
and this process holds it), proves it knows a random per-pool key (``multiprocessing.connection``
challenge), and then serves requests: pickled ``(job_id, payload)`` in, ``(job_id, "ok",
answer)`` or ``(job_id, "error", traceback)`` out.

Nothing can hang the caller: accepting, receiving and joining all have timeouts. A worker whose
parent dies sees its socket close and exits (``serve``); ``Pool.close`` stops the workers
politely, then by force.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

__all__ = ["Pool", "WorkerError", "serve"]

ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 1.0
"""How long stopping workers may take before they are killed."""
KEY_ENV = "BATCHGRAD_WORKER_KEY"
ADDRESS_ENV = "BATCHGRAD_WORKER_ADDRESS"


class WorkerError(RuntimeError):
    """A worker could not start, raised, died or did not answer in time."""


class Pool:
    """R worker processes of ``module``, each connected to this process by a socket."""

    def __init__(self, module: str, size: int, *, env: dict[str, str] | None = None,
                 label: str = "worker") -> None:
        self.module, self.size, self.env, self.label = module, size, env or {}, label
        self.procs: list[subprocess.Popen] = []
        self.conns: list[Connection] = []
        self._next = 0

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def start(self, timeout: float, extra_args: Callable[[int], list[str]] | None = None) -> None:
        """Spawn the workers and wait (≤ ``timeout`` s) until each has connected and said hello."""
        key = secrets.token_bytes(32)
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(0.5)
        host, port = server.getsockname()[:2]
        env = {**os.environ, **self.env, KEY_ENV: key.hex(), ADDRESS_ENV: f"{host}:{port}"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        try:
            for i in range(self.size):
                args = extra_args(i) if extra_args else []
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", self.module, "--worker", str(i), *args],
                    cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
            deadline = time.monotonic() + timeout
            # every worker connects first, then they say hello: one worker's set-up may wait
            # for the others (joining a process group)
            connected = self.conns
            while len(connected) < self.size:
                self._check_started(deadline, timeout, len(connected))
                try:
                    sock, _ = server.accept()
                except TimeoutError:
                    continue
                sock.settimeout(None)
                conn = Connection(sock.detach())
                deliver_challenge(conn, key)
                answer_challenge(conn, key)
                connected.append(conn)
            pending: dict[int, Connection] = {}
            for conn in connected:
                while not conn.poll(0.5):
                    self._check_started(deadline, timeout, len(pending), "said hello")
                index, status, info = conn.recv()
                if status != "ok":
                    raise WorkerError(f"{self.label} {index} failed to start:\n{info}")
                pending[int(index)] = conn
            self.conns = [pending[i] for i in range(self.size)]
        except BaseException:
            self.close()
            raise
        finally:
            server.close()

    def _check_started(self, deadline: float, timeout: float, done: int,
                       what: str = "connected") -> None:
        dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
        if dead:
            raise WorkerError(f"{self.label} {dead[0]} exited with code "
                              f"{self.procs[dead[0]].returncode} while starting (its stderr "
                              f"is above)")
        if time.monotonic() > deadline:
            raise WorkerError(f"only {done} of {self.size} {self.label}s {what} within "
                              f"{timeout:.0f} s")

    def request(self, payloads: list[Any], timeout: float) -> list[Any]:
        """Send payload i to worker i, and return their answers (``WorkerError`` on failure:
        the pool is then closed, since the workers may be stuck in a collective)."""
        self._next += 1
        job_id = self._next
        try:
            for conn, payload in zip(self.conns, payloads, strict=True):
                conn.send((job_id, payload))
            answers: dict[int, Any] = {}
            deadline = time.monotonic() + timeout
            while len(answers) < self.size:
                waiting = [i for i in range(self.size) if i not in answers]
                for i in waiting:
                    conn = self.conns[i]
                    if conn.poll(0.01):
                        got, status, answer = conn.recv()
                        if got != job_id:
                            continue  # an answer to an abandoned job
                        if status != "ok":
                            raise WorkerError(f"{self.label} {i} raised:\n{answer}")
                        answers[i] = answer
                if time.monotonic() > deadline:
                    dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
                    raise WorkerError(f"{self.label}s {waiting} sent no answer within "
                                      f"{timeout:.0f} s (exited: {dead})")
            return [answers[i] for i in range(self.size)]
        except (OSError, EOFError) as exc:
            self.close()
            raise WorkerError(f"lost the connection to a {self.label}: {exc!r}") from exc
        except WorkerError:
            self.close()
            raise

    def close(self) -> None:
        """Ask every worker to stop, give them ``STOP_GRACE_S`` together, then kill the rest
        (a worker holds nothing worth saving; interpreter teardown with torch takes seconds)."""
        for conn in self.conns:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5.0)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []


def serve(index: int, setup: Callable[[], Any], handle: Callable[[Any, Any], Any]) -> None:
    """The worker's side: connect, run ``setup()`` (its result, or its traceback, is the hello),
    then answer ``handle(state, payload)`` per request until told to stop or the parent is gone."""
    host, port = os.environ[ADDRESS_ENV].rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ.pop(KEY_ENV)))
    try:
        state = setup()
    except BaseException:  # noqa: B036  (reported, then this worker exits)
        conn.send((index, "error", traceback.format_exc()))
        return
    conn.send((index, "ok", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        job_id, payload = msg
        try:
            conn.send((job_id, "ok", handle(state, payload)))
        except BaseException:  # noqa: B036
            try:
                conn.send((job_id, "error", traceback.format_exc()))
            except (OSError, ValueError):
                return
