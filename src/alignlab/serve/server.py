"""Running the app with uvicorn: in the foreground (the CLI) or on a background thread (tests, the loop)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alignlab.errors import AlignlabError
from alignlab.serve.guard import LOOPBACK_NAMES

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


def check_exposure(host: str, api_key: str | None = None) -> None:
    """Refuse a bind off loopback when no API key is set (``api_key`` None reads ALIGNLAB_API_KEY)."""
    key = api_key if api_key is not None else os.environ.get("ALIGNLAB_API_KEY")
    if is_loopback(host) or key:
        return
    raise AlignlabError(
        f"refusing to listen on {host} without an API key: anyone who can reach this machine could use the API"
        " and write judgements",
        fix="set one, e.g. export ALIGNLAB_API_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(24))'),"
        " and have clients send Authorization: Bearer <key> (or bind 127.0.0.1)",
    )


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port another process holds (checked by binding it the way uvicorn will)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise AlignlabError(f"cannot listen on {host}:{port}: {err.strerror or err}",
                                fix=f"pass another --port (or stop what holds {port})") from None


def allowed_hosts_for(host: str, extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """Host header values to answer: loopback names, the bound address, and ``extra``.

    A wildcard bind (0.0.0.0, ::) with no ``extra`` answers any Host: it already needs an API key, and the
    names clients use for this machine are not known here.
    """
    if host in ("0.0.0.0", "::", "") and not extra:
        return ("*",)
    names = [*LOOPBACK_NAMES, *(h.strip().lower() for h in extra)]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host.lower())
    return tuple(dict.fromkeys(names))


def log_to_stderr() -> None:
    """The request log (one line per request, logger ``alignlab.serve``) on stderr."""
    log = logging.getLogger("alignlab.serve")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def serve(app, host: str = DEFAULT_HOST, port: int = 8000, api_key: str | None = None) -> None:
    """Run until Ctrl-C; refuses a non-loopback ``host`` without an API key."""
    import uvicorn

    check_exposure(host, api_key)
    log_to_stderr()
    if not is_loopback(host):
        logging.getLogger("alignlab.serve").warning(
            "listening on %s over plain http: the API key, prompts and ratings cross the network unencrypted; put a "
            "TLS proxy (caddy, nginx) in front of it for other machines", host)
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
