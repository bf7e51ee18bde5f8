"""Run the sharing server in a background thread of the current process.

For tests, benchmarks and notebooks that need a real HTTP endpoint on 127.0.0.1 without
a separate process: ``with EmbeddedServer(create_app(...)) as server: server.endpoint``.
The port is chosen by the operating system (port 0), so parallel runs never collide.
"""
from __future__ import annotations

import threading
import time

import uvicorn

from sharing_server.app import PREFIX


class EmbeddedServer:
    """A uvicorn server for ``app`` on an ephemeral port; a context manager."""

    def __init__(
        self,
        app,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 60.0,
        *,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        shutdown_timeout_s: int = 10,
    ):
        # proxy_headers=False: uvicorn would otherwise believe X-Forwarded-For from
        # 127.0.0.1; the app itself trusts only its configured proxies.
        config = uvicorn.Config(
            app, host=host, port=0, log_level="warning", access_log=False, proxy_headers=False,
            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, timeout_graceful_shutdown=shutdown_timeout_s,
        )
        self._server = uvicorn.Server(config)
        self._scheme = "https" if ssl_certfile else "http"
        self._thread = threading.Thread(target=self._server.run, name="sharing-server", daemon=True)
        self._host = host
        self._startup_timeout_s = startup_timeout_s
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"{self._scheme}://{self._host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The Delta Sharing endpoint for a profile file."""
        return f"{self.base_url}{PREFIX}"

    def start(self) -> "EmbeddedServer":
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedded sharing server did not start")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
