"""Free and total bytes of a chain's local destination, for ``trollmoves_destination_*_bytes``.

A destination that fills up loses data quietly: transfers fail one by one while the daemon is
"up". So the daemons that write to a local directory (client, dispatcher local targets,
s3downloader, WIS2 subscribe chains) export the file system's free and total bytes at scrape
time. A destination is a template (``file:///data/{platform_name}/``): its fixed part, up to the
first ``{``, names the directory watched; one not created yet is measured at its nearest
existing parent (the same file system, unless a mount point is made later).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

LOCAL_SCHEMES = ("", "file")


def local_root(destination: str | None) -> str | None:
    """The fixed local directory of a destination URL or path template, or None when it is not local.

    ``file:///data/{platform}/in`` -> ``/data``; ``/archive/{sensor}`` -> ``/archive``;
    ``/data/out/`` -> ``/data/out``; ``ftp://host/in``, ``s3://bucket/x`` or a relative path -> None.
    """
    if not destination:
        return None
    text = str(destination)
    templated = "{" in text
    fixed = text.split("{", 1)[0]
    parts = urlsplit(fixed)
    if parts.scheme.lower() not in LOCAL_SCHEMES:
        return None
    path = parts.path if parts.scheme else fixed
    if templated and not path.endswith("/"):
        path = os.path.dirname(path)  # "/data/NOAA{n}" is under /data
    if not os.path.isabs(path):
        return None
    return os.path.normpath(path)


def space(directory: str) -> tuple[int, int] | None:
    """(bytes free for unprivileged users, total bytes) of the file system holding ``directory``.

    A directory that does not exist yet is measured at its nearest existing parent. None when
    nothing on the way can be measured (permission denied, a dead network mount that errors).
    """
    path = os.path.abspath(directory)
    while True:
        try:
            stat = os.statvfs(path)
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
            continue
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
