"""The one walker over the entries of a message payload (``file``, ``dataset``, ``collection``).

A payload holds its files as dicts: the data itself (``file``), the items of a
``dataset`` list, the items of a ``collection`` list whose items may hold a
``dataset`` of their own, and so on. Each daemon needs a slightly different view of
them, and their answers must not change (the original's behaviour is the contract):

* the server (push, ack, relay) and the client's uid checks take every dict holding
  ``uri`` (or ``uid``) *anywhere* in the data, under any key, in any list;
* the client rewrites the ``uri`` of every dict holding ``uid`` reached through
  ``dataset`` and ``collection`` lists only (it changes the entries in place);
* the dispatcher and the s3downloader want each file as a new dict carrying the
  metadata of the dataset (or collection item) around it, as the original's
  ``_get_file_messages_from_dataset_message`` did.

``walk_entries`` is all three, chosen by ``containers`` and ``inherit``. Pure: no
sockets, no logging. The walk is iterative (depth-first, in document order), so it
never adds a ``RecursionError`` of its own to a deeply nested payload; message data
is decoded JSON, a tree, so there is no cycle to guard against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def walk_entries(data: Any, key: str, containers: Sequence[str] | None = None,
                 inherit: Mapping[str, Any] | None = None) -> list[dict]:
    """The entries (dicts holding ``key``) of message data, depth-first in document order.

    ``containers`` None: every dict holding ``key`` at any depth, under any key and in
    any list (nested lists included), is an entry, and the walk goes on into its
    values. The entries are the dicts themselves, not copies.

    ``containers`` a sequence of keys (``("dataset", "collection")``): the walk goes
    only into the *list* values of those keys, and only into the *dict* items of
    those lists (anything else there is skipped). Without ``inherit`` the entries
    are the dicts themselves, and a dict holding ``key`` is an entry even when it
    holds a container too.

    ``inherit`` a mapping (needs ``containers``): metadata handed down. A dict holding
    one of ``containers`` is a container, never an entry, whatever the container's
    value: its other items, over the metadata it inherited, are inherited by what it
    contains (nothing, if the value is not a list). Any other dict holding ``key`` is
    an entry, returned as a new dict: the inherited metadata updated with its own items.

    ``data`` may be a dict or a list of items (e.g. the items of a message's ``dataset``);
    anything else has no entries.
    """
    if inherit is not None and containers is None:
        raise ValueError("walk_entries: inherit needs the container keys (containers)")
    found: list[dict] = []
    stack: list[tuple[Any, Mapping[str, Any] | None]] = [(data, inherit)]
    while stack:
        node, base = stack.pop()
        if isinstance(node, list):
            items = node if containers is None else [item for item in node if isinstance(item, dict)]
            stack.extend((item, base) for item in reversed(items))
            continue
        if not isinstance(node, dict):
            continue
        if containers is None:
            if key in node:
                found.append(node)
            children = [value for value in node.values() if isinstance(value, (dict, list))]
        else:
            held = [name for name in containers if name in node]
            if base is not None:
                merged = {**base, **{name: value for name, value in node.items() if name not in containers}}
                if not held:
                    if key in node:
                        found.append(merged)
                    continue
                base = merged
            elif key in node:
                found.append(node)
            children = [node[name] for name in held if isinstance(node[name], list)]
        stack.extend((child, base) for child in reversed(children))
    return found


def entries_with(data: Any, key: str) -> list[dict]:
    """Every dict holding ``key`` anywhere in message data (top level, dataset and collection entries)."""
    return walk_entries(data, key)
