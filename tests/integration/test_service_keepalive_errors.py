"""Errors never cost a client its keep-alive connection (issue 14, reliability holes).

A JSON id beyond int64 once raised OverflowError (500), and after any 500 uvicorn reset the
connection, so the client's next request on it failed too. Both are checked on one raw socket
against real uvicorn: the bad id gets a 422 naming `ids`, and an unexpected exception a 500
after which the same connection still answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from grace_selection.api.app import create_app
from grace_selection.local_service import free_loopback_port
from grace_selection.settings import ServiceSettings
from tests.integration.service_process import start_service


class RawConnection:
    """One keep-alive HTTP/1.1 connection; a reset shows as an exception, not a retry."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        raw_head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw_head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length")
        )
        while len(self.buffer) < length:
            self._read()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, answer

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the service closed the keep-alive connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def test_an_id_beyond_int64_is_a_422_naming_ids_and_the_connection_lives(tmp_path: Path) -> None:
    with start_service(tmp_path / "data", "") as service:
        port = int(service.url.rsplit(":", 1)[1])
        connection = RawConnection(port)
        try:
            job = {"job_id": "j", "n_samples": 10, "dim": 4}
            assert connection.request("POST", "/v1/jobs", json.dumps(job).encode())[0] == 201
            # The JSON of the reproduction, the id written out as an integer literal.
            body = (
                b'{"batch_id":"j2","source":"worker","round":1,"ids":['
                + str(10**30).encode()
                + b'],"loss":[1.0]}'
            )
            status, answer = connection.request("POST", "/v1/jobs/j/scores", body)
            error = json.loads(answer)
            assert status == 422, answer
            assert error["field"].split(".")[0] == "ids"
            assert error["error"] == "invalid_field"
            status, answer = connection.request("GET", "/v1/jobs/j")
            assert status == 200
            assert json.loads(answer)["scored_count"] == 0  # nothing of it was applied
        finally:
            connection.close()
        assert "OverflowError" not in service.log_text()


@pytest.fixture
def failing_server(tmp_path: Path) -> Iterator[int]:
    """The real app, plus one route that fails unexpectedly, under uvicorn in a thread."""
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", index="brute"))

    @app.get("/fail-unexpectedly")
    async def fail_unexpectedly() -> None:
        raise RuntimeError("a bug")

    port = free_loopback_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_500_keeps_the_keep_alive_connection(failing_server: int) -> None:
    connection = RawConnection(failing_server)
    try:
        for _ in range(3):
            status, answer = connection.request("GET", "/fail-unexpectedly")
            assert status == 500
            assert json.loads(answer)["error"] == "internal_error"
            status, _ = connection.request("GET", "/healthz")  # the same connection
            assert status == 200
    finally:
        connection.close()
