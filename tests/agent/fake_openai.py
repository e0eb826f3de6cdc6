"""A real OpenAI-protocol chat server on 127.0.0.1 that follows a script, ignores every cap and
can misbehave: garbage bodies, streams reset mid-reply, replies without usage."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Text:
    """Stream ``tokens`` chunks of text whatever cap the request sets, one every ``pace_s``
    seconds (as a model generates them); report usage if asked and ``usage``."""

    tokens: int
    word: str = "tok "
    usage: bool = True
    pace_s: float = 0.0


@dataclass
class ToolCall:
    """One tool call; ``args`` as a string is sent as it is (cut-off JSON, say), with ``finish``."""

    name: str
    args: dict[str, Any] | str
    finish: str = "tool_calls"


@dataclass
class Raw:
    """A 200 reply with this body, whatever the request asked for."""

    body: bytes
    content_type: str = "text/event-stream"


@dataclass
class Reset:
    """Stream ``chunks`` chunks of text, then reset the connection (TCP RST) mid-reply."""

    chunks: int


@dataclass
class Status:
    """Answer with an HTTP error."""

    code: int
    message: str


@dataclass
class Sleep:
    seconds: float


Reply = Text | ToolCall | Status | Sleep | Raw | Reset


class FakeOpenAI:
    """``/v1/chat/completions`` over HTTP (streamed server-sent events, as OpenAI sends them).

    ``script(body, n)`` picks the reply to the n-th request (from 1); every request body is kept in
    ``requests``, the number of chunks each streamed reply got out before the client hung up in
    ``sent`` and their text in ``texts``.
    """

    def __init__(self, script: Callable[[dict[str, Any], int], Reply]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.sent: list[int] = []
        self.texts: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake._reply(self, body, fake.script(body, len(fake.requests)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *_: None  # type: ignore[method-assign]  # a reset connection
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _reply(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], reply: Reply) -> None:
        if isinstance(reply, Sleep):
            time.sleep(reply.seconds)
            return
        if isinstance(reply, Status | Raw):
            error = {"error": {"message": getattr(reply, "message", ""), "type": "server_error"}}
            data = reply.body if isinstance(reply, Raw) else json.dumps(error).encode()
            handler.send_response(reply.code if isinstance(reply, Status) else 200)
            handler.send_header("Content-Type", getattr(reply, "content_type", "application/json"))
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        prompt = len(json.dumps(body["messages"])) // 4
        sent, text = 0, ""

        def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
            handler.wfile.write(f"data: {json.dumps({**chunk, 'choices': choices, **extra})}\n\n".encode())
            handler.wfile.flush()

        try:
            if isinstance(reply, ToolCall):
                args = reply.args if isinstance(reply.args, str) else json.dumps(reply.args)
                call = {"name": reply.name, "arguments": args}
                delta = {"role": "assistant", "tool_calls": [{"index": 0, "id": "call-1", "function": call}]}
                event([{"index": 0, "delta": delta, "finish_reason": None}])
                sent, text, finish = 1, reply.name + args, reply.finish
            else:
                n = reply.chunks if isinstance(reply, Reset) else reply.tokens
                word = getattr(reply, "word", "tok ")
                for _ in range(n):
                    event([{"index": 0, "delta": {"content": word}, "finish_reason": None}])
                    sent, text = sent + 1, text + word
                    time.sleep(getattr(reply, "pace_s", 0.0))
                if isinstance(reply, Reset):
                    linger = struct.pack("ii", 1, 0)  # close at once with a TCP RST
                    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    handler.connection.close()
                    raise ConnectionResetError
                finish = "stop"
            event([{"index": 0, "delta": {}, "finish_reason": finish}])
            if body.get("stream_options", {}).get("include_usage") and getattr(reply, "usage", True):
                usage = {"prompt_tokens": prompt, "completion_tokens": sent, "total_tokens": prompt + sent}
                event([], usage=usage)
            handler.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.sent.append(sent)
        self.texts.append(text)


@pytest.fixture
def fake_openai() -> Iterator[Callable[[Callable[[dict[str, Any], int], Reply]], FakeOpenAI]]:
    servers: list[FakeOpenAI] = []

    def start(script: Callable[[dict[str, Any], int], Reply]) -> FakeOpenAI:
        servers.append(FakeOpenAI(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
