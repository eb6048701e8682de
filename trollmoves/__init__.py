"""trollmoves: the file-transfer daemons of a satellite data chain.

A server watches directories and announces each new file over posttroll; clients
request the files they want and the server pushes them with a mover (local, FTP,
SCP, SFTP, S3); a mirror relays between networks; a dispatcher pushes products to
remote targets; an s3downloader pulls from object storage.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("trollmoves")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
