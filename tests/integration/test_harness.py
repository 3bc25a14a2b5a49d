"""The broker harness itself: a port taken between choosing it and binding it is survived."""

from __future__ import annotations

import http.server
import threading

from .conftest import Broker


class _AlwaysReady(http.server.BaseHTTPRequestHandler):
    """Some other process's server that happens to answer our health check."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_start_moves_off_a_port_another_process_took(tmp_path):
    squatter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysReady)
    thread = threading.Thread(target=squatter.serve_forever, daemon=True)
    thread.start()
    b = Broker(tmp_path / "broker")
    taken = squatter.server_address[1]
    b.http_port = taken  # as if another process bound the chosen port before the broker did
    try:
        b.start()
        assert b.starts == 2  # the first start found its port taken; the second got new ones
        assert b.http_port != taken
        assert b.running
    finally:
        b.stop()
        squatter.shutdown()
        squatter.server_close()
        thread.join(10)
