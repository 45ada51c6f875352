"""A scripted OpenAI-compatible server in its own process (tests talk to it over HTTP, as to any
remote endpoint): /v1/models, and /v1/chat/completions answering from a script.

    python -m tests.scripted_server SCRIPT.json PORT_FILE LOG_FILE

SCRIPT: {"fail": [429, 503, ...], "tool_turns": [[{"name": ..., "arguments": "<JSON text>"}, ...], ...],
"delay": SECONDS}
-- the first requests get the `fail` statuses (429 with `retry-after-ms: 10`); a request that offers
tools gets the next turn of `tool_turns` as tool calls (the arguments sent as written: they may be
malformed), or a plain answer when the turns are used up; every other request a valid answer made
from its JSON schema (`response_format`): the smallest arrays it allows, integers counting up from
the minimum within an array (so a pair is [0, 1]), numbers at 0.2. Each request's status goes to
LOG_FILE, one line each (`200 tools` for a request that offered tools).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def example(schema: dict, index: int = 0):
    kind = schema.get("type")
    if kind == "object":
        return {name: example(sub) for name, sub in schema.get("properties", {}).items()
                if name in schema.get("required", [])}
    if kind == "array":
        return [example(schema.get("items", {}), k) for k in range(schema.get("minItems", 1))]
    if kind == "integer":
        low, high = schema.get("minimum", 0), schema.get("maximum", 10**6)
        return min(high, low + index)
    if kind == "number":
        return max(schema.get("minimum", 0.0), min(schema.get("maximum", 1.0), 0.2))
    return None


def main() -> None:
    script = json.loads(Path(sys.argv[1]).read_text())
    port_file, log_file = Path(sys.argv[2]), Path(sys.argv[3])
    failures = list(script.get("fail", []))
    turns = list(script.get("tool_turns", []))
    delay = float(script.get("delay", 0.0))  # seconds before each answer (a slow model)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with lock:
                status = failures.pop(0) if failures else 200
                turn = turns.pop(0) if status == 200 and request.get("tools") and turns else None
                with log_file.open("a") as log:
                    log.write(f"{status}{' tools' if request.get('tools') else ''}\n")
            time.sleep(delay)
            if status != 200:
                headers = {"retry-after-ms": "10"} if status == 429 else {}
                self._send(status, {"error": {"message": f"scripted {status}", "type": "scripted"}}, headers)
                return
            schema = ((request.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
            content = json.dumps(example(schema)) if schema else "{}"
            message = {"role": "assistant", "content": content}
            if request.get("tools"):
                message = {"role": "assistant", "content": "" if turn else "I have seen enough."}
                if turn:
                    message["tool_calls"] = [{"id": f"call-{k}", "type": "function",
                                              "function": {"name": c["name"], "arguments": c["arguments"]}}
                                             for k, c in enumerate(turn)]
            self._send(200, {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": "scripted",
                             "choices": [{"index": 0, "finish_reason": "tool_calls" if request.get("tools") and turn
                                          else "stop", "message": message}],
                             "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
