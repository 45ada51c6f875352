"""A real llama.cpp server (xllamacpp) on 127.0.0.1, in a child process we own.

A child process rather than a thread: it can be stopped for sure (terminate, then kill), and
on Linux it is told to die with its parent (PR_SET_PDEATHSIG), so a killed search leaves no
orphan server behind.

The context (n_ctx) defaults to the model's training context (GGUF metadata), at least 4096
and at most 8192 tokens: the embedded SmolLM2-135M was trained on 8192, which an 80-layer genome
needs (an 80-layer crosser prompt alone is ~4000 tokens, see agents/limits.py). The size of the
KV cache does not change what the model answers, only the memory it reserves.

    python -m agents.local_server MODEL.gguf PORT THREADS CTX [HOST [SLOTS [ALIAS [GPU_LAYERS]]]]   (what the child runs)

An API key (`main.py serve --api-key`) reaches the child in its environment (API_KEY_ENV), never on
its command line, where any user of the machine could read it.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


API_KEY_ENV = "SELF_PRUNER_SERVER_API_KEY"
DEFAULT_CTX = 4096  # the floor (and the context when the GGUF does not say)
MAX_AUTO_CTX = 8192  # the ceiling of the automatic choice: KV memory grows with it


class LocalServerError(RuntimeError):
    pass


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_context_length(path: str | Path) -> int | None:
    """`<arch>.context_length` from a GGUF header (the training context), or None. Reads the
    key-value header only, stopping at the key. Not `gguf.GGUFReader`: it parses every tensor's
    record first, 3.2 s on the embedded model at each agent start, against ~0 here."""
    try:
        with open(path, "rb") as f:
            def read(fmt: str):
                return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

            def skip(kind: int) -> None:
                if kind in _GGUF_SCALARS:
                    f.seek(struct.calcsize("<" + _GGUF_SCALARS[kind]), 1)
                elif kind == 8:  # string
                    f.seek(read("Q"), 1)
                elif kind == 9:  # array
                    item, n = read("I"), read("Q")
                    if item in _GGUF_SCALARS:
                        f.seek(n * struct.calcsize("<" + _GGUF_SCALARS[item]), 1)
                    else:
                        for _ in range(n):
                            skip(item)
                else:
                    raise ValueError(f"unknown GGUF value type {kind}")

            if f.read(4) != b"GGUF" or read("I") < 2:
                return None
            read("Q")  # tensor count
            for _ in range(read("Q")):
                key = f.read(read("Q")).decode("utf-8", errors="replace")
                kind = read("I")
                if key.endswith(".context_length") and kind in _GGUF_SCALARS:
                    return int(read(_GGUF_SCALARS[kind]))
                skip(kind)
    except (OSError, struct.error, ValueError):
        return None
    return None


def auto_context(gguf: str | Path) -> int:
    """The model's training context, clamped to [DEFAULT_CTX, MAX_AUTO_CTX]."""
    trained = gguf_context_length(gguf) or DEFAULT_CTX
    return max(DEFAULT_CTX, min(trained, MAX_AUTO_CTX))


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
    def __init__(self, gguf: str | Path, threads: int | None = None, ctx: int | None = None,
                 startup_timeout: float = 120.0, port: int | None = None, host: str = "127.0.0.1", slots: int = 1,
                 api_key: str | None = None, alias: str | None = None, gpu_layers: int = -1):
        """slots: requests served at once (llama.cpp's parallel slots, batched together); `ctx` is each
        slot's context (the server gets slots x ctx). api_key: requests without it are refused (401);
        alias: the model name /v1/models shows (default: llama.cpp's, the file's path); gpu_layers:
        layers offloaded to a GPU (-1: llama.cpp's default, every layer where its build has a GPU; a CPU
        build ignores it)."""
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise LocalServerError(f"agent model {gguf} is not a file")
        self.port = port or free_port()
        self.host = host  # 127.0.0.1 for the agent; `main.py serve --host 0.0.0.0` to share
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.ctx = ctx or auto_context(self.gguf)  # None: from the GGUF (see the module docstring)
        self.startup_timeout = startup_timeout
        self.slots = max(1, slots)
        self.api_key, self.alias, self.gpu_layers = api_key, alias, gpu_layers
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}/v1"

    def start(self) -> "LocalLlamaServer":
        cmd = [sys.executable, "-m", "agents.local_server", str(self.gguf), str(self.port), str(self.threads),
               str(self.ctx * self.slots), self.host, str(self.slots), self.alias or "", str(self.gpu_layers)]
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop(API_KEY_ENV, None)
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
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
            with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/health", timeout=1) as response:
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


def _serve(gguf: str, port: int, threads: int, ctx: int, host: str = "127.0.0.1", slots: int = 1, alias: str = "",
           gpu_layers: int = -1) -> None:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = gguf
    params.n_ctx = ctx
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = [host]
    params.port = port
    params.n_parallel = slots  # each slot gets ctx / slots
    if os.environ.get(API_KEY_ENV):
        params.api_keys = [os.environ[API_KEY_ENV]]
    if alias:
        params.model_alias = {alias}
    params.n_gpu_layers = gpu_layers
    server = xllamacpp.Server(params)  # noqa: F841 (serves on its own threads while we wait)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    os._exit(0)  # skip interpreter teardown of the native server threads


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6],
           *[int(a) for a in sys.argv[6:7]], *sys.argv[7:8], *[int(a) for a in sys.argv[8:9]])
