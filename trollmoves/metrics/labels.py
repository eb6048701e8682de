"""The fixed label values of the trollmoves metrics, and the helpers that map onto them.

Labels come from small fixed sets (chain, scheme, reason, type), never file names, paths,
URLs, hosts or users: an unknown scheme or message type is counted under a known value,
so that the number of series stays bounded.
"""

from __future__ import annotations

SCHEMES = ("file", "ftp", "scp", "sftp", "s3")
REQUEST_TYPES = ("push", "ack", "info", "ping", "unknown")
REFUSAL_REASONS = ("not_announced", "outside_origin", "pattern_mismatch", "destination_not_allowed",
                   "malformed", "unauthenticated", "path_escape")
FAILURE_REASONS = ("transient", "permanent", "refused", "timeout", "error", "checksum")
MESSAGE_TYPES = ("file", "dataset", "collection", "push", "ack", "beat", "other")
POOL_STATES = ("idle", "leased")
RELOAD_RESULTS = ("success", "failure")


def scheme_label(scheme: str) -> str:
    scheme = (scheme or "file").lower()
    return scheme if scheme in SCHEMES else "file"


def message_type_label(atype: str) -> str:
    return atype if atype in MESSAGE_TYPES else "other"
