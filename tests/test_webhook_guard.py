"""Issue 12: callback_url cannot be used to reach or probe what only the server can reach.

Webhooks go to http(s) only, never follow redirects, carry no CR/LF, and reach loopback, link-local
and private addresses only inside ``webhook_allowed_networks`` (checked at submission for an address
in the URL, and at each delivery on every address a host name resolves to). A failed delivery says
"no HTTP answer", the same for a closed port, a timeout or a missing host.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, wait_for
from jupyter_taskq.notebook.client import TaskqError


def add(a, b):
    return a + b


class Receiver:
    """Answers every POST with ``status`` (and a Location header for a redirect)."""

    def __init__(self, status: int = 200, location: str | None = None):
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls += 1
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:22/", "http://localhost:8888/", "http://[::1]:80/", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/", "http://192.168.1.1/", "http://0.0.0.0:80/", "http://[::ffff:127.0.0.1]/",
])
def test_non_public_addresses_are_refused_at_submission(make_server, url):
    client = make_server(gpus=[], cpu_workers=1, webhook_allowed_networks=[]).client()
    with pytest.raises(TaskqError, match="webhook_allowed_networks") as info:
        client.submit(add, (1, 2), callback_url=url)
    assert info.value.status_code == 400


@pytest.mark.parametrize("url", ["http://example.com/a\r\nX-Injected: 1", "http://exa mple.com/", "file:///etc/passwd",
                                 "gopher://127.0.0.1:6379/"])
def test_crlf_spaces_and_other_schemes_are_refused(shared_server, url):
    with pytest.raises(ValueError, match="'callback_url' must be an http"):
        shared_server.client().submit(add, (1, 2), callback_url=url)


def test_a_name_resolving_to_loopback_is_refused_at_delivery(make_server):
    host = socket.gethostname()
    try:
        address = socket.getaddrinfo(host, 80)[0][4][0]
    except OSError:
        pytest.skip("this machine's name does not resolve")
    if not address.startswith("127."):
        pytest.skip(f"{host} resolves to {address}, not to loopback")
    receiver = Receiver()
    try:
        port = receiver.server.server_address[1]
        client = make_server(gpus=[], cpu_workers=1, webhook_allowed_networks=[]).client()
        handle = client.submit(add, (1, 2), callback_url=f"http://{host}:{port}/hook")  # a name: accepted now
        assert handle.result(timeout=30) == 3
        callback = wait_for(lambda: client.get(handle.id)["callback"], 20, message="a delivery attempt")
        assert callback["attempts"][0]["error"].startswith("not sent: callback_url's host")
        assert receiver.calls == 0
    finally:
        receiver.close()


def test_redirects_are_not_followed_and_failures_do_not_tell_ports_apart(shared_server):
    target = Receiver()
    redirect = Receiver(status=302, location=target.url)
    try:
        client = shared_server.client()
        redirected = client.submit(add, (1, 1), callback_url=redirect.url)
        closed = client.submit(add, (1, 1), callback_url=f"http://127.0.0.1:{free_port()}/")
        for handle in (redirected, closed):
            handle.result(timeout=30)
        first = wait_for(lambda: (client.get(redirected.id)["callback"] or {}).get("attempts"), 20,
                         message="the redirect answered")
        assert first[0]["status_code"] == 302 and not first[0]["ok"]
        assert "redirect" in first[0]["error"] and target.calls == 0
        attempts = wait_for(lambda: (client.get(closed.id)["callback"] or {}).get("attempts"), 20,
                            message="the closed port tried")
        assert attempts[0]["error"] == "no HTTP answer from the receiver"  # not "ConnectionRefusedError ..."
    finally:
        target.close()
        redirect.close()
