"""A real WebDAV server for the test suite: wsgidav served by cheroot on 127.0.0.1.

`WebdavServer` serves a temporary directory at `/` to user `USER` (password `PASSWORD`)
and the same directory read-only at `/ro` to user `READER` (wsgidav has read-only shares,
not read-only users): every write there is refused with 403. The top folder `.bucket`
plays the bucket. `stop()` then `start()` keeps the port and the data (the files are on
disk), for fault tests.

Run as a script (``python servers_webdav.py PORT DIRECTORY``) it is the server itself.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
from servers import HOST, FolderServer

USER = "lakery"
PASSWORD = "dav-pw-5e3cret"  # distinctive: tests look for it in output
READER = "reader"
READER_PASSWORD = "reader-pw-5e3cret"


class WebdavServer(FolderServer):
    """wsgidav under cheroot, in a subprocess (its own warnings and threads stay there)."""

    name = "webdav"
    bucket = ".bucket"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"base_url": self.endpoint, "auth": (USER, PASSWORD)}

    @property
    def reader_options(self) -> dict[str, Any]:
        """Options of the read-only user, on the read-only share."""
        return {"base_url": f"{self.endpoint}/ro", "auth": (READER, READER_PASSWORD)}

    @property
    def host_port(self) -> str:
        """``host:port``, for URLs that name the server (``webdav://host:port/...``). (Not
        ``authority``: the suite's URLs leave the server to the ``base_url`` option.)"""
        return f"{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, __file__, str(self.port), str(self.data)]

    def metadata(self, key: str) -> dict[str, str | None]:
        """What the server answers for the object's content type (wsgidav guesses it from
        the file name) and encoding (none)."""
        url = f"{self.endpoint}/{self.bucket}/{key}"
        response = httpx.head(url, auth=(USER, PASSWORD), timeout=10)
        response.raise_for_status()
        return {
            "content_type": response.headers.get("Content-Type"),
            "content_encoding": response.headers.get("Content-Encoding"),
        }

    def files(self, prefix: str = "") -> list[str]:
        """Every file under ``.bucket/prefix`` on disk, relative to the bucket."""
        top = self.data / self.bucket
        found = [
            os.path.relpath(os.path.join(folder, name), top)
            for folder, _, names in os.walk(top / prefix)
            for name in names
        ]
        return sorted(found)


def serve(port: int, directory: str) -> None:
    """Serve ``directory`` on ``HOST:port`` until killed."""
    from cheroot import wsgi
    from wsgidav.fs_dav_provider import FilesystemProvider
    from wsgidav.wsgidav_app import WsgiDAVApp

    config = {
        "provider_mapping": {
            "/": directory,
            "/ro": FilesystemProvider(directory, readonly=True),
        },
        "simple_dc": {
            "user_mapping": {
                "/": {USER: {"password": PASSWORD}},
                "/ro": {READER: {"password": READER_PASSWORD}},
            }
        },
        # Basic answers in one round trip (httpx sends it with the first request).
        "http_authenticator": {"accept_digest": False, "default_to_digest": False},
        "dir_browser": {"enable": False},
        "verbose": 1,
        "logging": {"enable": False},
    }
    server = wsgi.Server(
        (HOST, port),
        WsgiDAVApp(config),
        numthreads=80,  # 64 concurrent streams, each holding a thread while it uploads
        request_queue_size=128,
        timeout=60,  # a slow test stream may pause between blocks
    )
    server.safe_start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
