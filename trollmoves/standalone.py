"""Standalone ``unpack`` announcements: an archive's members as fsspec chained URIs (reference §3.2).

A server chain without ``request_port`` and with ``unpack`` announces an archive as a
``dataset`` of its members, each readable through SSH without a copy. Only the
server's standalone mode uses this.
"""

from __future__ import annotations

import socket
import tarfile
import zipfile
from typing import Any


def archive_members(path: str, protocol: str) -> list[str]:
    """The files of a tar or zip archive, sorted, as fsspec's archive file systems list them."""
    if protocol == "zip":
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    else:
        with tarfile.open(path, "r:*") as archive:
            names = [member.name for member in archive.getmembers() if member.isfile()]
    return sorted(name.lstrip("/") for name in names)


def standalone_archive_data(path: str, protocol: str, fields: dict, info: dict) -> dict:
    """A standalone ``unpack`` announcement: the archive's members as fsspec chained URIs.

    0.19 built it with pytroll-collectors' ``extract_local_files_to_message_for_remote_use``:
    one ``dataset`` entry per member, ``tar://<member>::ssh://<host><archive>``, so that a
    reader on another host (trollflow2) opens the member through SSH without a copy.
    """
    host = socket.gethostname()
    filesystem = {"cls": f"fsspec.implementations.{protocol}:{protocol.capitalize()}FileSystem",
                  "protocol": protocol, "args": [], "fo": path, "target_protocol": "ssh",
                  "target_options": {"host": host}}
    dataset = [{"filesystem": dict(filesystem, target_options={"host": host}),
                "uri": f"{protocol}://{name}::ssh://{host}{path}", "uid": f"{protocol}://{name}"}
               for name in archive_members(path, protocol)]
    data: dict[str, Any] = {"dataset": dataset}
    data.update(info)
    data.update(fields)
    return data
