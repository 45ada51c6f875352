"""`main.py serve MODEL|FILE.gguf`: an OpenAI-compatible endpoint of a (pruned) model through
llama.cpp's own server (xllamacpp), run as a child process the way the local agent's is."""
from __future__ import annotations

import ipaddress
import os
import signal
import time
from pathlib import Path

from ui.console import console, err_console


def gguf_for(target: str, quant: str) -> Path:
    """The GGUF to serve: the file itself, or one exported from a checkpoint folder (reused while
    it is newer than the checkpoint's weights)."""
    path = Path(target).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    from commands.export import checkpoint_dir
    from deploy.exports import export_gguf, gguf_targets, parse_quants

    folder, name, default_dir = checkpoint_dir(target)
    quants = parse_quants(quant)[:1]
    targets = gguf_targets(folder, name, quants, None, default_dir)
    gguf = targets[quants[0]]
    weights = [p.stat().st_mtime for p in folder.glob("*.safetensors")]
    if gguf.is_file() and weights and gguf.stat().st_mtime > max(weights):
        err_console.print(f"serving {gguf} (exported earlier from {folder})")
        return gguf
    export_gguf(folder, name, targets, say=err_console.print)
    return gguf


def port_free(host: str, port: int) -> None:
    import socket

    from agents.local_server import LocalServerError

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise LocalServerError(f"cannot listen on {host}:{port} ({err.strerror}): pick another --port") from err


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def api_key_for(args) -> str | None:
    """--api-key, else $SELF_PRUNER_API_KEY; refused (bad input) when the server would listen beyond
    this machine without one, unless --no-api-key says so on purpose."""
    key = args.api_key or os.environ.get("SELF_PRUNER_API_KEY") or None
    if key is None and not is_loopback(args.host):
        if not args.no_api_key:
            raise ValueError(f"--host {args.host} listens beyond this machine: give --api-key KEY (or "
                             f"$SELF_PRUNER_API_KEY) so that only clients with the key are served, or --no-api-key "
                             f"to serve anyone who reaches the port")
        err_console.print(f"[bold yellow]warning:[/] serving {args.host}:{args.port} without an API key: anyone who "
                          f"reaches the port can use it")
    return key


def run_serve(args) -> int:
    from agents.local_server import LocalLlamaServer

    key = api_key_for(args)  # before anything starts
    if args.parallel < 1:
        raise ValueError(f"--parallel {args.parallel}: must be at least 1")
    port_free(args.host, args.port)  # before any export: a taken port is a one-line error
    gguf = gguf_for(args.target, args.quant)
    alias = args.alias or gguf.stem
    server = LocalLlamaServer(gguf, threads=args.threads, ctx=args.ctx, port=args.port, host=args.host,
                              slots=args.parallel, api_key=key, alias=alias, gpu_layers=args.gpu_layers)
    with err_console.status(f"starting llama.cpp server on {args.host}:{args.port} ..."):
        server.start()
    console.print(f"serving {gguf.name} at {server.base_url}  (OpenAI-compatible; model name {alias!r}; "
                  f"{args.parallel} request(s) at once{'; API key required' if key else ''})")
    auth = " -H 'Authorization: Bearer $KEY'" if key else ""
    console.print(f"try: curl {server.base_url}/chat/completions{auth} -H 'Content-Type: application/json' "
                  "-d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'")
    console.print("stop with Ctrl-C")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            if server.process is None or server.process.poll() is not None:
                raise RuntimeError("the llama.cpp server stopped")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    console.print("server stopped")
    return 0
