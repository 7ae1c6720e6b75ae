"""The server's configuration: TUX's procfs variables, as one TOML file overridable by flags.

Every value is read by the stages on their paths (the protocol served, the
listen sockets, the thread count, the mime table, CGI, the timeouts), as TUX
reads its procfs variables: they are what specialization on the configuration
folds (thesis 7.2). A bad value is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROTOCOLS = ("http", "ftp")

# The base mime table (TUX's built-in set); configured extras are added to it.
BASE_MIME_TYPES: dict[str, str] = {
    "html": "text/html", "htm": "text/html", "txt": "text/plain", "css": "text/css",
    "js": "text/javascript", "json": "application/json", "xml": "application/xml",
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "svg": "image/svg+xml", "ico": "image/x-icon", "pdf": "application/pdf",
    "gz": "application/gzip", "tar": "application/x-tar", "zip": "application/zip",
    "wasm": "application/wasm", "mp4": "video/mp4", "webp": "image/webp",
}
DEFAULT_MIME_TYPE = "application/octet-stream"
# The mime type that sends a request to the CGI handler (TUX's MIME_TYPE_CGI).
CGI_MIME_TYPE = "application/x-httpd-cgi"


class ConfigError(ValueError):
    """A configuration value the server cannot run with; the message names the key."""


@dataclass(frozen=True)
class Listen:
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Config:
    protocol: str = "http"
    document_root: str = "."
    listen: tuple[Listen, ...] = (Listen("0.0.0.0", 80),)
    threads: int = 1
    mime_types: dict[str, str] = field(default_factory=dict)  # extension -> type, over the base set
    index_files: tuple[str, ...] = ("index.html", "index.htm")
    keepalive_timeout: float = 15.0
    request_timeout: float = 10.0
    max_connect: int = 1000
    max_header_len: int = 8192
    max_request_line: int = 8192
    max_headers: int = 100
    logging: bool = True
    cgi_dir: str = ""  # a directory under the root whose files run as CGI; "" is off
    cgi_timeout: float = 5.0
    ftp_passive_ports: tuple[int, int] = (30000, 30999)

    def mime_type(self, extension: str) -> str:
        """The type of a file extension: configured extras first, then the base set."""
        extension = extension.lower()
        return self.mime_types.get(extension) or BASE_MIME_TYPES.get(extension, DEFAULT_MIME_TYPE)

    def root(self) -> Path:
        return Path(self.document_root).resolve()


def _listen(value: Any, key: str) -> tuple[Listen, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"{key} wants ADDRESS:PORT or a list of them, got {value!r}")
    out = []
    for item in items:
        address, sep, port = str(item).rpartition(":")
        try:
            ipaddress.IPv4Address(address)
            number = int(port)
        except ValueError:
            raise ConfigError(f"{key} wants ADDRESS:PORT (IPv4), got {item!r}") from None
        if not sep or not 0 < number < 65536:
            raise ConfigError(f"{key} wants a port of 1 to 65535, got {item!r}")
        out.append(Listen(address, number))
    return tuple(out)


def _check(config: Config) -> Config:
    if config.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {config.protocol!r}")
    if not Path(config.document_root).is_dir():
        raise ConfigError(f"document_root {config.document_root!r} is not a directory")
    for name in ("threads", "max_connect", "max_header_len", "max_request_line", "max_headers"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    for name in ("keepalive_timeout", "request_timeout", "cgi_timeout"):
        value = getattr(config, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    low, high = config.ftp_passive_ports
    if not 0 < low <= high < 65536:
        raise ConfigError(f"ftp_passive_ports must be LOW, HIGH within 1-65535, got {config.ftp_passive_ports!r}")
    for extension, kind in config.mime_types.items():
        if not extension or "/" not in kind:
            raise ConfigError(f"mime_types wants extension = 'type/subtype', got {extension!r} = {kind!r}")
    return config


def make_config(values: dict[str, Any], base: Config | None = None) -> Config:
    """A checked Config from plain values (a TOML table, flags); unknown keys are errors."""
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown configuration key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        if key == "listen":
            converted[key] = _listen(value, key)
        elif key in ("index_files",):
            converted[key] = tuple(value)
        elif key == "ftp_passive_ports":
            converted[key] = tuple(value)
        elif key == "mime_types":
            if not isinstance(value, dict):
                raise ConfigError("mime_types wants a table of extension = 'type/subtype'")
            converted[key] = {str(k).lower().lstrip("."): str(v) for k, v in value.items()}
        else:
            converted[key] = value
    try:
        return _check(replace(base or Config(), **converted))
    except TypeError as bad:
        raise ConfigError(str(bad)) from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """The TOML file's values (if any), then the overrides (flags) on top."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except OSError as bad:
            raise ConfigError(f"cannot read {path}: {bad.strerror}") from None
        except tomllib.TOMLDecodeError as bad:
            raise ConfigError(f"{path}: {bad}") from None
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return make_config(values)
