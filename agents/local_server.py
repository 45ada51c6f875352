"""A real llama.cpp server (xllamacpp) on 127.0.0.1, in a child process we own.

A child process rather than a thread: it can be stopped for sure (terminate, then kill), and
on Linux it is told to die with its parent (PR_SET_PDEATHSIG), so a killed search leaves no
orphan server behind.

    python -m agents.local_server MODEL.gguf PORT THREADS CTX   (what the child runs)
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class LocalServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalLlamaServer:
    def __init__(self, gguf: str | Path, threads: int | None = None, ctx: int = 4096, startup_timeout: float = 120.0):
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise LocalServerError(f"agent model {gguf} is not a file")
        self.port = free_port()
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.ctx = ctx
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LocalLlamaServer":
        cmd = [sys.executable, "-m", "agents.local_server", str(self.gguf), str(self.port), str(self.threads), str(self.ctx)]
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")[-500:] if self.process.stderr else ""
                raise LocalServerError(f"local agent server exited during start-up: {err.strip()}")
            if self.healthy():
                return self
            time.sleep(0.2)
        self.stop()
        raise LocalServerError(f"local agent server did not answer within {self.startup_timeout:.0f} s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _serve(gguf: str, port: int, threads: int, ctx: int) -> None:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = gguf
    params.n_ctx = ctx
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_parallel = 1
    server = xllamacpp.Server(params)  # noqa: F841 (serves on its own threads while we wait)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    os._exit(0)  # skip interpreter teardown of the native server threads


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
