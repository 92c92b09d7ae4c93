"""The scheduler address, TLS, and the errors of reaching a Dask cluster.

A plain ``tcp://`` address is accepted only when its host is loopback (every address it
resolves to): the head and the workers exchange commands, environments and output, and Dask
authenticates nothing without TLS. Anything else needs ``tls://`` with a CA, a certificate
and its key (``--tls-ca/--tls-cert/--tls-key``), or a Dask configuration that provides them
(``distributed.comm.tls.*``). No Dask import at module level: the CLI checks the address
before anything heavy loads.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from queuectl.errors import UsageError

__all__ = [
    "EXTRA_HINT",
    "RemoteConfigError",
    "RemoteUnavailable",
    "Tls",
    "check_address",
    "import_distributed",
]

EXTRA_HINT = "pip install 'queuectl[dask]'"


class RemoteUnavailable(UsageError):
    """The Dask cluster cannot be reached (at start)."""


class RemoteConfigError(UsageError):
    """The cluster is reachable but unsafe or unusable (allowed-failures, plugin missing,
    a plain address that is not loopback, missing TLS files)."""


@dataclass(frozen=True)
class Tls:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def given(self) -> bool:
        return any((self.ca, self.cert, self.key))

    def security(self) -> Any:
        """A ``distributed.Security`` for these files (or from the Dask config when none)."""
        from distributed.security import Security

        if not self.given():
            import dask.config

            if not dask.config.get("distributed.comm.tls.ca-file", None):
                raise RemoteConfigError(
                    "a tls:// scheduler needs --tls-ca, --tls-cert and --tls-key (or "
                    "distributed.comm.tls.* in the Dask configuration)"
                )
            return Security(require_encryption=True)  # from the Dask configuration
        missing = [name for name, v in (("--tls-ca", self.ca), ("--tls-cert", self.cert)) if not v]
        if missing:
            raise RemoteConfigError(f"TLS needs {' and '.join(missing)} as well")
        for path in (self.ca, self.cert, self.key):
            if path is not None and not path.is_file():
                raise RemoteConfigError(f"TLS file {path} does not exist")
        return Security(
            tls_ca_file=str(self.ca),
            tls_client_cert=str(self.cert),
            tls_client_key=str(self.key) if self.key else None,
            require_encryption=True,
        )


def check_address(address: str, tls: Tls) -> str:
    """The address to connect to, or a RemoteConfigError saying what is wrong with it."""
    if "://" not in address:
        address = ("tls://" if tls.given() else "tcp://") + address
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise RemoteConfigError(
            f"bad scheduler address {address!r}: expected tls://HOST:PORT (or tcp://127.0.0.1:PORT)"
        )
    if parts.scheme == "tls":
        return address
    if parts.scheme != "tcp":
        raise RemoteConfigError(
            f"bad scheduler address {address!r}: the scheme must be tls:// (or tcp:// on loopback)"
        )
    if not _is_loopback(parts.hostname):
        raise RemoteConfigError(
            f"plain tcp:// is accepted on loopback only, not {parts.hostname}: use "
            "tls://HOST:PORT with --tls-ca/--tls-cert/--tls-key"
        )
    if tls.given():
        raise RemoteConfigError("--tls-* options need a tls:// scheduler address")
    return address


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def import_distributed() -> None:
    """Fail with the one line that says how to install the extra."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"--executor dask needs Dask distributed ({exc.name or 'distributed'} is not "
            f"installed): {EXTRA_HINT}"
        ) from None
