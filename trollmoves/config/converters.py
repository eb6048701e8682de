"""Value converters: the raw value of one config key into its typed value, or ``Invalid``.

A raw value is a str from INI or a native value from YAML/TOML. Each converter
returns the typed value or raises ``Invalid("expected ...")``; the readers add the
file, section, key and the value found, so the texts here say only what was
expected. ``Invalid`` and ``to_bool`` live in ``trollmoves.values``, below both the
config and the transfer options, and are re-exported here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from trollmoves.values import FALSE_WORDS as _FALSE
from trollmoves.values import TRUE_WORDS as _TRUE
from trollmoves.values import Invalid as Invalid
from trollmoves.values import to_bool as to_bool


CHECKSUM_METHODS = ("xxh3_128", "xxh3_64", "sha256", "sha512", "md5", "none")
DESTINATION_SCHEMES = ("", "file", "ftp", "scp", "sftp", "s3")


def to_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise Invalid("expected a string")
    return str(value).strip()


def to_nonempty_str(value: Any) -> str:
    text = to_str(value)
    if not text:
        raise Invalid("expected a non-empty string")
    return text


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise Invalid("expected an integer")
    try:
        return int(str(value).strip())
    except ValueError:
        raise Invalid("expected an integer") from None


def to_nonneg_int(value: Any) -> int:
    number = to_int(value)
    if number < 0:
        raise Invalid("expected an integer >= 0")
    return number


_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
               "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def to_byte_size(value: Any) -> int:
    """A size in bytes: ``1048576``, ``100 MiB``, ``10G`` (binary units; 0 means no limit)."""
    text = "" if isinstance(value, bool) else str(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise Invalid("expected a size in bytes, e.g. 1048576, 100 MiB or 10 GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise Invalid("expected a number")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise Invalid("expected a number") from None
    if not math.isfinite(number):
        raise Invalid("expected a finite number")
    return number


def to_nonneg_float(value: Any) -> float:
    number = to_float(value)
    if number < 0:
        raise Invalid("expected a number >= 0")
    return number


def to_port(value: Any) -> int:
    number = to_int(value)
    if not 0 <= number <= 65535:
        raise Invalid("expected a port number 0-65535")
    return number


def to_request_port(value: Any) -> int:
    number = to_port(value)
    if number == 0:
        raise Invalid("expected a port number 1-65535")
    return number


def to_list(value: Any) -> tuple[str, ...]:
    """Whitespace-separated list (INI) or a real list (YAML/TOML)."""
    if isinstance(value, (list, tuple)):
        return tuple(to_nonempty_str(item) for item in value)
    return tuple(str(value).split())


def to_comma_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(to_nonempty_str(item) for item in value)
    return tuple(item.strip() for item in str(value).split(",") if item.strip())


def to_pattern(value: Any) -> str:
    """A trollsift pattern: balanced braces, fields trollsift can parse."""
    from trollsift import globify
    from trollsift.parser import regex_format

    pattern = to_nonempty_str(value)
    try:
        globify(pattern)
        regex_format(pattern)
    except Exception as exc:  # noqa: BLE001 - trollsift: ValueError, re.error, AttributeError, KeyError...
        raise Invalid(f"expected a trollsift pattern ({exc})") from None
    return pattern


def to_origin(value: Any) -> str:
    pattern = to_pattern(value)
    if not os.path.isabs(pattern.split("{", 1)[0] or "x"):
        raise Invalid("expected an absolute path pattern (e.g. /data/in/{name}.dat)")
    return pattern


def to_template(value: Any) -> str:
    """A destination template: a URL whose fields are filled from message metadata."""
    from trollsift import globify

    text = to_nonempty_str(value)
    try:
        globify(text)
    except Exception as exc:  # noqa: BLE001 - as in to_pattern: trollsift's errors have no common base
        raise Invalid(f"expected a URL template with balanced {{fields}} ({exc})") from None
    scheme = urlsplit(text.split("{", 1)[0] if "://" not in text.split("{", 1)[0] else text).scheme
    if "://" in text and scheme.lower() not in DESTINATION_SCHEMES:
        raise Invalid(f"expected a destination URL with scheme in {', '.join(s for s in DESTINATION_SCHEMES if s)}"
                      f" (got scheme '{scheme}')")
    _check_userinfo(text)
    return text


def _check_userinfo(url: str) -> None:
    """Refuse a password whose ``#``, ``?`` or ``/`` would end the URL's user-info early.

    ``ftp://alice:pa#ss@host/`` means password ``pa#ss`` to a reader, but to ``urlsplit`` (client,
    server, 0.19 alike) ``pa`` is a port and ``ss@host/`` a fragment: the transfer fails, and the
    password was published in ``push`` messages. The redaction still recognises such a user-info;
    when it does and ``urlsplit`` sees none, the two disagree and the URL is refused.
    """
    from trollmoves.redact import redact

    if "@" in urlsplit(url).netloc or redact(url) == url:
        return
    raise Invalid("expected a URL whose password has '#', '?' and '/' percent-encoded (%23, %3F, %2F; "
                  "or use the login key): unencoded, they end the user-info early and the password leaks",
                  got=redact(url))


def to_url_list(value: Any) -> tuple[str, ...]:
    items = to_list(value)
    if not items:
        raise Invalid("expected one or more destination URLs")
    urls = []
    for item in items:
        try:
            urls.append(to_template(item))
        except Invalid as exc:
            raise Invalid(str(exc), got=item) from None
    return tuple(urls)


_PROVIDER = re.compile(r"^(?:tcp://)?(?P<host>\[[0-9a-fA-F:]+\]|[^\s:/]+):(?P<port>\d+)(?:/(?P<topic>.*))?$")


@dataclass(frozen=True)
class Provider:
    """A publisher to subscribe to: ``host:port[/topic]``."""

    host: str
    port: int
    topic: str | None = None

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{self.topic or ''}"  # the topic starts with "/"


def to_provider(text: str) -> Provider:
    match = _PROVIDER.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise Invalid("expected host:port[/topic]")
    topic = match["topic"]
    if topic is not None:
        topic = "/" + topic.strip("/") if topic.strip("/") else None
    return Provider(match["host"], int(match["port"]), topic)


def to_providers(value: Any) -> tuple[Provider, ...]:
    items = to_list(value)
    if not items:
        raise Invalid("expected one or more host:port[/topic]")
    providers = []
    for item in items:
        try:
            providers.append(to_provider(item))
        except Invalid:
            raise Invalid("expected host:port[/topic] (whitespace-separated)", got=item) from None
    return tuple(providers)


def to_nameservers(value: Any) -> tuple[str, ...] | bool:
    """``False`` (no nameserver, plain publisher) or a list of nameserver hosts."""
    if isinstance(value, bool):
        if value:
            raise Invalid("expected False or a list of nameserver hosts")
        return False
    if isinstance(value, (list, tuple)):
        return to_list(value)
    text = str(value).strip()
    if text.lower() in _FALSE or text.lower() == "none":
        return False
    hosts = to_list(text)
    if not hosts:
        raise Invalid("expected False or a list of nameserver hosts")
    return hosts


def to_nameserver(value: Any) -> str | bool:
    """A ``listen`` chain's ``nameserver``: a host, or a boolean."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    return to_nonempty_str(text)


def to_info(value: Any) -> Mapping[str, Any]:
    """``k=v;k2=a,b`` into a mapping; comma-separated values become lists (as the original)."""
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    items: dict[str, Any] = {}
    for element in str(value).split(";"):
        element = element.strip()
        if not element:
            continue
        if "=" not in element:
            raise Invalid("expected key=value;key2=value2 items", got=element)
        key, val = (part.strip() for part in element.split("=", 1))
        if not key:
            raise Invalid("expected key=value;key2=value2 items", got=element)
        items[key] = val.split(",") if "," in val else val
    return MappingProxyType(items)


def _choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Callable[[Any], str]:
    aliases = aliases or {}

    def convert(value: Any) -> str:
        text = to_str(value).lower()
        text = aliases.get(text, text)
        if text not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}")
        return text

    return convert


def to_server_compression(value: Any) -> str | bool:
    """Server-side decompression: ``xrit`` or ``bzip`` (never ``eval``-ed, unlike the original)."""
    if isinstance(value, bool) or str(value).strip().lower() in _FALSE | {""}:
        if value is True:
            raise Invalid("expected xrit or bzip")
        return False
    return _choice("xrit", "bzip", aliases={"bz2": "bzip", "bzip2": "bzip"})(value)


def to_client_compression(value: Any) -> str | bool:
    if isinstance(value, bool) or str(value).strip().lower() in _FALSE | {""}:
        if value is True:
            raise Invalid("expected bzip, tar or xrit")
        return False
    return _choice("bzip", "tar", "xrit", aliases={"bz2": "bzip", "bzip2": "bzip"})(value)


to_checksum = _choice(*CHECKSUM_METHODS, aliases={"xxh128": "xxh3_128", "xxh3": "xxh3_128", "xxh64": "xxh3_64"})


def to_login(value: Any) -> str:
    """``user[:password]``; the password may hold any character (``@``, ``/``, ``:``, ``#``...): the client
    percent-encodes both parts when it puts them into the destination URL it sends the server."""
    text = to_nonempty_str(value)
    if not text.partition(":")[0]:
        raise Invalid("expected user[:password] with a non-empty user")
    return text


def to_bind_address(value: Any) -> str:
    text = to_nonempty_str(value)
    if any(c in text for c in " /"):
        raise Invalid("expected an IP address or host name to bind to (e.g. 127.0.0.1, 0.0.0.0 or *)")
    return text


def to_existing_dir(value: Any) -> str:
    text = to_nonempty_str(value)
    if not os.path.isdir(os.path.expanduser(text)):
        raise Invalid("expected an existing directory")
    return text


def to_existing_file(value: Any) -> str:
    text = to_nonempty_str(value)
    if not os.path.isfile(os.path.expanduser(text)):
        raise Invalid("expected an existing file")
    return text
