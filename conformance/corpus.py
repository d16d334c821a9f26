"""Curated dialogs: the bundled examples, the scenario files, and the RFC 4475
torture messages read from the shared corpus (never copied into the repo)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from sipct.spec.dialog import Connect, Dialog, Endpoint, Send, load_dialog
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP

PACKAGE = Path(__file__).resolve().parent
SCENARIOS = PACKAGE / "scenarios"
TORTURE_HOSTS = {"ua": ipaddress.ip_address("192.0.2.2"), "server": ipaddress.ip_address("198.51.100.2")}


def shared_dir() -> Path | None:
    """``../shared`` beside the repository (or $SIPCT_SHARED)."""
    candidates = [os.environ.get("SIPCT_SHARED"), PACKAGE.parent.parent / "shared", Path.cwd().parent / "shared"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def example_dialogs() -> list[Dialog]:
    import sipct.spec

    return [load_dialog(p) for p in sorted((Path(sipct.spec.__file__).parent / "examples").glob("*.yaml"))]


def scenario_dialogs(root: Path = SCENARIOS) -> list[Dialog]:
    return [load_dialog(p) for p in sorted(root.rglob("*.yaml"))]


def rfc4475_dialogs(shared: Path | None = None) -> list[Dialog]:
    """Each torture message as a one-message dialog from ua to server, over
    UDP and over TCP. Empty when the corpus is not there."""
    shared = shared if shared is not None else shared_dir()
    folder = shared / "corpora" / "rfc4475" if shared else None
    if folder is None or not folder.is_dir():
        return []
    out = []
    ua, server = Endpoint("ua", 5060), Endpoint("server", 5060)
    for path in sorted(folder.glob("*.dat")):
        payload = path.read_bytes()
        name = f"rfc4475-{path.stem}"
        out.append(Dialog(f"{name}-udp", str(path), 4, dict(TORTURE_HOSTS),
                          (Send(1, ua, server, IPPROTO_UDP, (payload,)),), tags=("rfc4475",)))
        client = Endpoint("ua", 40000)
        out.append(Dialog(f"{name}-tcp", str(path), 4, dict(TORTURE_HOSTS),
                          (Connect(1, client, server), Send(2, client, server, IPPROTO_TCP, (payload,))),
                          tags=("rfc4475",)))
    return out
