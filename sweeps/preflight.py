"""Checks of the machine a sweep will run on, made before Ray starts: the cluster address answers,
the storage path is writable. Each failure is a one-line SweepError naming the value.

Without them a dead address keeps ``ray.init`` retrying for minutes, and a storage path on
``/proc``, on a file or on a read-only filesystem fails with an OSError after Ray has started.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

from sweeps.options import SweepError

CONNECT_TIMEOUT_S = 5.0
# HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS is one) answers
# with a SETTINGS frame of its own (RFC 9113 §3.4); anything else is not a Ray head.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


def check_address(address: str | None, timeout: float | None = None) -> None:
    """``--address``: None or ``local`` (a new local instance) pass; ``auto`` and ``host:port`` must
    lead to a listening Ray head, found the way ``ray.init`` finds it (``RAY_ADDRESS`` first)."""
    if address in (None, "local"):
        return
    valid = "valid: a running Ray head's host:port (e.g. 10.0.0.5:6379), 'auto' on a node of a running cluster, or omit --address"
    if address.startswith("ray://"):
        raise SweepError(
            f"--address {address!r}: Ray Client (ray://) is not supported, the sweep's driver must run on a "
            f"cluster node (its MLflow store and storage are local paths); {valid}"
        )
    from ray._private.services import get_ray_address_from_environment  # ray.init's own resolution

    try:
        target = get_ray_address_from_environment(address, None)
    except ConnectionError as err:
        raise SweepError(f"--address {address!r}: {str(err).split('. ')[0]}; {valid}") from None
    where = (
        f"{address!r}"
        if target == address
        else f"{address!r} (resolved to {target!r}{' by RAY_ADDRESS' if os.environ.get('RAY_ADDRESS') else ''})"
    )
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or target.startswith("ray://"):
        raise SweepError(f"--address {where} is not host:port; {valid}")
    reason = _unanswered(host.strip("[]"), int(port), CONNECT_TIMEOUT_S if timeout is None else timeout)
    if reason:
        raise SweepError(f"--address {where}: {reason}; {valid}")


def _unanswered(host: str, port: int, timeout: float) -> str | None:
    """Why ``host:port`` is not a Ray head, or None when it answers like one (gRPC over HTTP/2)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return None  # a TLS handshake first: the listening port is all we check
            conn.settimeout(timeout)
            conn.sendall(_PREFACE)
            header = conn.recv(9)
    except socket.gaierror as err:
        return f"unknown host ({err.strerror})"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as err:
        return f"nothing listens there ({err.strerror or err})"
    if len(header) < 4 or header[3] != _SETTINGS:
        return "something listens there but it is not a Ray head (no gRPC answer)"
    return None


def check_storage(given: Path) -> None:
    """``--storage-path`` must be a writable folder, or creatable in one (nothing is created here:
    a temporary file in the nearest existing folder is written and removed). A URL is refused:
    ``Path("s3://b")`` would be the local folder ``./s3:/b``."""
    if given.parts and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]+:", given.parts[0]):
        raise SweepError(
            f"--storage-path {str(given)!r} is a URL ({given.parts[0]}//...), not a folder; valid: a local or "
            "mounted folder (on a cluster, a shared one such as NFS at the same path on every node)"
        )
    path = existing = given.expanduser().resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SweepError(
            f"--storage-path {str(path)!r}: {str(existing)!r} is a file, not a folder; valid: a writable folder"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".sbl-write-test-"):
            pass
    except OSError as err:
        raise SweepError(
            f"--storage-path {str(path)!r} is not writable ({err.strerror or err} in {str(existing)!r}); "
            "valid: a writable folder"
        ) from None
