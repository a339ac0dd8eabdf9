"""A real SFTP server for the tests: asyncssh, in a subprocess on 127.0.0.1.

`SFTPServer` is an `Emulator` (see servers.py): entering starts it and makes the top folder
`BUCKET`; `stop()` then `start()` keeps the port, the host key and the data (for fault tests).
The account is SFTP-only (no shell, so no `cp`), chrooted to the server's folder:

- user `USER`, password `PASSWORD`, or the client key `client_key` (both accepted);
- user `READER`, same password: reads only, every write is refused (permission denied).

The server's host key is written to `known_hosts` (OpenSSH format, for host-key checks).
Run as a script, this module is the server: `python servers_sftp.py ROOT PORT HOSTKEY CLIENTPUB`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from servers import BUCKET, HOST, FolderServer, greets

USER = "lake"
READER = "reader"
PASSWORD = "sftp-test-secret"  # a string the secret tests look for in output


class SFTPServer(FolderServer):
    """asyncssh's SFTP server on a folder of its own."""

    name = "sftp"
    bucket = BUCKET

    def __init__(self) -> None:
        super().__init__()
        import asyncssh

        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_file = self.folder / "host_key"
        host_key.write_private_key(str(self.host_key_file))
        self.client_key_file = self.folder / "client_key"
        client_key.write_private_key(str(self.client_key_file))
        self.client_pub_file = self.folder / "client_key.pub"
        client_key.write_public_key(str(self.client_pub_file))
        self.known_hosts = self.folder / "known_hosts"
        self._host_key = host_key.export_public_key("openssh").decode().strip()

    @property
    def endpoint(self) -> str:
        return f"sftp://{HOST}:{self.port}"

    @property
    def authority(self) -> str:
        """``user@host:port``, as URLs name the server (the password stays in options)."""
        return f"{USER}@{HOST}:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"password": PASSWORD}

    @property
    def connect_options(self) -> dict[str, Any]:
        """What a URL's ``user@host:port`` says, as filesystem options (for clients made
        by the tests themselves)."""
        return {"host": HOST, "port": self.port, "username": USER}

    def answers(self) -> bool:
        return greets(self.port, b"SSH-")

    def command(self) -> list[str]:
        # Here, not at __init__: a start that finds its port taken retries on another.
        self.known_hosts.write_text(f"[{HOST}]:{self.port} {self._host_key}\n")
        return [
            sys.executable,
            __file__,
            str(self.data),
            str(self.port),
            str(self.host_key_file),
            str(self.client_pub_file),
        ]


async def _serve(root: str, port: int, host_key: str, authorized_keys: str) -> None:
    import asyncssh

    authorized = asyncssh.import_authorized_keys(authorized_keys)

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username in (USER, READER) and password == PASSWORD

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return username == USER and authorized.validate(key, "", "") is not None

    class Files(asyncssh.SFTPServer):
        def __init__(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
            super().__init__(chan, chroot=root.encode())
            self._reader = chan.get_extra_info("username") == READER

        def _refuse(self) -> None:
            if self._reader:
                raise asyncssh.SFTPPermissionDenied("read-only account")

        def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
            if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT):
                self._refuse()
            return super().open(path, pflags, attrs)

        def remove(self, path: bytes) -> None:
            self._refuse()
            super().remove(path)

        def rename(self, oldpath: bytes, newpath: bytes) -> None:
            self._refuse()
            super().rename(oldpath, newpath)

        def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
            self._refuse()
            super().posix_rename(oldpath, newpath)

        def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
            self._refuse()
            super().mkdir(path, attrs)

        def rmdir(self, path: bytes) -> None:
            self._refuse()
            super().rmdir(path)

    await asyncssh.listen(
        HOST,
        port,
        server_host_keys=[host_key],
        server_factory=Server,
        sftp_factory=Files,
        allow_scp=False,
        reuse_address=True,
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    os.umask(0o022)
    keys = Path(sys.argv[4]).read_text()
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2]), sys.argv[3], keys))
