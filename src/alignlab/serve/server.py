"""Running the app with uvicorn: in the foreground (the CLI) or on a background thread (tests, the loop)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def exposure_warning(host: str) -> str | None:
    """The warning line for a non-loopback bind, or None."""
    if is_loopback(host):
        return None
    return (
        f"warning: listening on {host}, not loopback: anyone who can reach this machine can use the API and"
        " write judgements (set ALIGNLAB_API_KEY to require a key)"
    )


def serve(app, host: str = DEFAULT_HOST, port: int = 8000) -> None:
    """Run until Ctrl-C."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextmanager
def background(app, host: str = DEFAULT_HOST, port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a thread; yield its base URL once it accepts connections; stop it on exit.

    ``port`` 0 binds a free port: the socket is bound here and handed to uvicorn, so there is no
    window in which another process can take the port.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="alignlab-serve")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield url_for(host, port)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
