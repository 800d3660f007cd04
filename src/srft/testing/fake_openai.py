"""A deterministic OpenAI-compatible critic server with fault injection, on real sockets.

Used by the tests (429/500/slow/truncated/non-JSON/wrong-count faults, the SIGKILL resume test) and by the
throughput benchmark; also runnable for demos: `python -m srft.testing.fake_openai --port 8011 --delay 0.5`.

It answers `POST /v1/chat/completions` with a valid critic answer for the steps the request asks about (read
from the JSON schema in `response_format`, else from the prompt's "each step A to B"). Every step is labelled
`good` unless its prompt text contains a `label:<name>` hint. A `plan(request)` hook may return a `Reply` to
inject a fault instead; every request is recorded (with its attempt number and timing) for the tests to count.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from srft.critic.parse import schema_steps

_RANGE = re.compile(r"exactly one entry for each step (\d+) to (\d+)")
_STEP = re.compile(r"^### Step (\d+)(.*?)(?=^### Step |\Z|^## )", re.S | re.M)
_HINT = re.compile(r"label:(good|unnecessary|mistake|recover)")


@dataclass
class Request:
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    finished: float | None = None  # set when the reply was fully written
    status: int | None = None

    @property
    def prompt(self) -> str:
        return self.body["messages"][0]["content"]

    @property
    def attempt(self) -> int:
        return 0 if len(self.body["messages"]) == 1 else 1

    @property
    def steps(self) -> list[int]:
        fmt = self.body.get("response_format") or {}
        schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
        if schema:
            return schema_steps(schema)
        m = _RANGE.search(self.prompt)
        return list(range(int(m.group(1)), int(m.group(2)) + 1)) if m else []


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: a valid critic answer
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate: bool = False  # announce the full length, send half, close the connection
    content: str | None = None  # a 200 chat completion whose message content is this text


def answer_text(request: Request) -> str:
    """The valid answer: every asked step once, labelled by its `label:` hint or `good`."""
    hints = {int(m.group(1)): _HINT.search(m.group(2)) for m in _STEP.finditer(request.prompt)}
    steps = [{"step": n, "label": hints[n].group(1) if hints.get(n) else "good", "reason": f"step {n} judged"}
             for n in request.steps]
    return json.dumps({"steps": steps})


def completion_body(request: Request, content: str) -> bytes:
    return json.dumps({
        "id": "fake", "object": "chat.completion", "model": request.body.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(request.prompt) // 4, "completion_tokens": len(content) // 4},
    }).encode()


class FakeCriticServer:
    """`with FakeCriticServer(delay_s=..., plan=...) as server: ... server.url ... server.requests`."""

    def __init__(self, *, delay_s: float = 0.0, plan: Callable[[Request], Reply | None] | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.delay_s, self.plan = delay_s, plan
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeCriticServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _reply(self, request: Request) -> Reply:
        reply = self.plan(request) if self.plan else None
        reply = reply or Reply()
        if reply.status == 200 and reply.body is None:
            content = reply.content if reply.content is not None else answer_text(request)
            reply.body = completion_body(request, content)
        reply.delay_s = reply.delay_s or self.delay_s
        return reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # keep test output clean
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Request(json.loads(raw), dict(self.headers), time.monotonic())
                with server._lock:
                    server.requests.append(request)
                reply = server._reply(request)
                time.sleep(reply.delay_s)
                body = reply.body or b""
                try:
                    self.send_response(reply.status)
                    for k, v in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:len(body) // 2] if reply.truncate else body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    return
                if reply.truncate:
                    self.close_connection = True
                    return
                request.status, request.finished = reply.status, time.monotonic()

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    with FakeCriticServer(delay_s=args.delay, host=args.host, port=args.port) as server:
        print(f"fake critic server on {server.url} (delay {args.delay}s); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
