"""A real FTP server for the tests: pyftpdlib, in a subprocess on 127.0.0.1.

`FTPServer` is an `Emulator` (see servers.py): entering starts it and makes the top folder
`BUCKET`; `stop()` then `start()` keeps the port and the data (for fault tests). Accounts:

- user `USER`, password `PASSWORD`: reads and writes everything under the server's folder;
- user `READER`, same password: reads only, every write is refused (550, permission denied).

URLs name the server as `ftp://127.0.0.1:PORT/BUCKET/...` (`authority`); the storage options
name it again with the user and password. `ftp://USER:PASSWORD@127.0.0.1:PORT/...` URLs
(credentials in the URL, no options) are tested in test_ftp.py.
Run as a script, this module is the server: `python servers_ftp.py ROOT PORT`.
"""

from __future__ import annotations

import sys
from typing import Any

from servers import BUCKET, HOST, FolderServer, greets

USER = "lake"
READER = "reader"
PASSWORD = "ftp-test-secret-5b1e"  # a string the secret tests look for in output


class FTPServer(FolderServer):
    """pyftpdlib's FTP server on a folder of its own."""

    name = "ftp"
    bucket = BUCKET

    @property
    def endpoint(self) -> str:
        return f"ftp://{HOST}:{self.port}"

    @property
    def authority(self) -> str:
        """``host:port``, as URLs name the server (FTP paths start after it)."""
        return f"{HOST}:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """The server, user and password as options: they win over what a URL says, and
        a URL made from a pointer (``ftp:///bucket/...``, no host) works with them."""
        return {**self.connect_options, "password": PASSWORD}

    @property
    def connect_options(self) -> dict[str, Any]:
        """What a URL's ``user@host:port`` says, as filesystem options (for clients made
        by the tests themselves)."""
        return {"host": HOST, "port": self.port, "username": USER}

    def filesystem(self) -> Any:
        """A new fsspec FTP filesystem logged in as ``USER``, without a listings cache,
        that makes the folders of what it writes (as other backends' test clients do)."""
        return _test_filesystem_class()(
            skip_instance_cache=True, use_listings_cache=False, **self.storage_options
        )

    def command(self) -> list[str]:
        return [sys.executable, __file__, str(self.data), str(self.port)]

    def answers(self) -> bool:
        return greets(self.port, b"220")


def _test_filesystem_class() -> type[Any]:
    from fsspec.implementations.ftp import FTPFileSystem

    class TestFTPFileSystem(FTPFileSystem):
        def pipe_file(
            self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
        ) -> None:
            self.makedirs(self._parent(path), exist_ok=True)
            super().pipe_file(path, value, mode=mode, **kwargs)

    return TestFTPFileSystem


def _serve(root: str, port: int) -> None:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer as Server

    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, root, perm="elradfmwMT")
    authorizer.add_user(READER, PASSWORD, root, perm="elr")
    handler = FTPHandler
    handler.authorizer = authorizer
    handler.passive_ports = None
    handler.masquerade_address = HOST
    Server.allow_reuse_address = True
    server = Server((HOST, port), handler)
    server.max_cons = 512
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    _serve(sys.argv[1], int(sys.argv[2]))
