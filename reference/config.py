"""The helper's configuration file (TOML), documented key by key in docs/reference.rst.

A bad file is reported with the key and, where it can be found, the line:
``/etc/sipct/helper.toml:7: helper.fail_policy: expected "open" or "closed", got "maybe"``.
"""

from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sipct.netlink.cthelper import NF_CT_HELPER_NAME_LEN, ExpectPolicy, UserspaceHelper
from sipct.spec.expectation import IPPROTO_TCP, IPPROTO_UDP, SIP_EXPECT_POLICY, ExpectClass
from sipct.spec.params import ModuleParams, ParameterError
from sipct.spec.profiles import PROFILES, KernelProfile, profile_for_kernel

from .master_state import MasterState

__all__ = ["ConfigError", "HelperConfig", "LOG_LEVELS", "load_config", "parse_config"]

FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
TRANSPORTS = {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP}
FAIL_POLICIES = ("open", "closed")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_WORKERS = 64
EXPECT_MAX_SYSCTL = Path("/proc/sys/net/netfilter/nf_conntrack_expect_max")

# section -> key -> default (None: required to be absent or derived)
KEYS: dict[str, dict[str, Any]] = {
    "helper": {
        "name": "sip",
        "families": ["ipv4", "ipv6"],
        "transports": ["udp", "tcp"],
        "queue": 0,
        "tcp_queue": None,
        "queue_maxlen": 1024,
        "fail_policy": "open",
        "profile": "auto",
        "resync_interval": 60,
        "event_rcvbuf": 0,
        "workers": 1,
    },
    "sip": {
        "ports": [5060],
        "sip_timeout": 3600,
        "sip_direct_signalling": True,
        "sip_direct_media": True,
        "sip_external_media": False,
        "expect_max": "auto",
    },
    "log": {
        "level": "info",
    },
}


class ConfigError(ValueError):
    """A configuration the helper cannot run with; names the file, line and key."""

    def __init__(self, message: str, *, path: Path | str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path, self.line, self.key, self.message = path, line, key, message
        where = str(path or "<config>") + (f":{line}" if line else "")
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


@dataclass(frozen=True)
class HelperConfig:
    """A validated configuration."""

    name: str = "sip"
    families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)
    transports: tuple[int, ...] = (IPPROTO_UDP, IPPROTO_TCP)
    queue: int = 0
    tcp_queue: int | None = None
    queue_maxlen: int = 1024
    fail_policy: str = "open"
    profile: str = "auto"
    resync_interval: float = 60.0
    event_rcvbuf: int = 0  # bytes of SO_RCVBUF(FORCE) on the ctnetlink event socket; 0: as opened
    params: ModuleParams = field(default_factory=ModuleParams)
    expect_max_auto: bool = True
    log_level: str = "info"
    path: Path | None = None
    workers: int = 1  # processes, each with helpers and queues of its own (worker())
    worker_index: int | None = None  # set in a worker's own configuration

    @property
    def fail_open(self) -> bool:
        return self.fail_policy == "open"

    def queue_for(self, proto: int) -> int:
        return self.tcp_queue if proto == IPPROTO_TCP and self.tcp_queue is not None else self.queue

    @property
    def queues(self) -> tuple[int, ...]:
        """This process's queues; with workers, every worker's (worker_configs())."""
        return tuple(sorted({q for w in self.worker_configs() for q in (w.queue_for(p) for p in w.transports)}))

    def worker(self, index: int) -> HelperConfig:
        """Worker ``index``'s own configuration: helper ``<name>-<index>`` on
        queue ``queue + index`` (and ``tcp_queue + index``).  The kernel
        queues a conntrack's packets to its helper's one queue
        (nfnl_userspace_cthelper()), so the fan-out is the ruleset's: it
        picks a helper per new conntrack (``ct helper set jhash ... map``),
        and every packet of that master then reaches the same worker."""
        if self.workers == 1:
            return self
        if self.worker_index is not None or not 0 <= index < self.workers:
            raise ValueError(f"no worker {index} of {self.workers}")
        return replace(self, name=f"{self.name}-{index}", queue=self.queue + index,
                       tcp_queue=None if self.tcp_queue is None else self.tcp_queue + index, worker_index=index)

    def worker_configs(self) -> list[HelperConfig]:
        """Every process's configuration (this one's alone in a worker)."""
        if self.workers == 1 or self.worker_index is not None:
            return [self]
        return [self.worker(i) for i in range(self.workers)]

    @property
    def names(self) -> tuple[str, ...]:
        """The helper names registered: ``name``, or one per worker."""
        return tuple(w.name for w in self.worker_configs())

    def kernel_profile(self, release: str | None = None) -> KernelProfile:
        """The configured profile; "auto": the running kernel's."""
        if self.profile != "auto":
            return PROFILES[self.profile]
        from sipct.netlink.kernel import kernel_version
        import os
        return profile_for_kernel(kernel_version(release or os.uname().release))

    def module_params(self) -> ModuleParams:
        """The spec's parameters; with expect_max "auto" the namespace's
        nf_conntrack_expect_max sysctl, read now."""
        if not self.expect_max_auto:
            return self.params
        try:
            value = int(EXPECT_MAX_SYSCTL.read_text())
        except (OSError, ValueError):
            return self.params
        values = self.params.as_mapping()
        values["expect_max"] = value
        return ModuleParams.from_mapping(values)

    def registrations(self) -> list[UserspaceHelper]:
        """One userspace helper per (family, transport), with sip_exp_policy[]:
        the kernel helper's classes, limits (1/4/4/2) and timeouts (180 s)."""
        policies = tuple(ExpectPolicy(SIP_EXPECT_POLICY[k].name, SIP_EXPECT_POLICY[k].max_expected,
                                      SIP_EXPECT_POLICY[k].timeout) for k in ExpectClass)
        return [UserspaceHelper(w.name, family, proto, w.queue_for(proto), policies, MasterState.SIZE)
                for w in self.worker_configs() for family in self.families for proto in self.transports]


def _line_of(text: str, section: str | None, key: str | None) -> int | None:
    """The line of ``key`` in ``[section]`` (or of the section header)."""
    current = None
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"']+)\s*\]")
    for number, line in enumerate(text.splitlines(), 1):
        m = header.match(line)
        if m:
            current = m.group(1).strip("\"'")
            if key is None and current == section:
                return number
            continue
        if key is not None and current == section and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
    return None


def parse_config(text: str, path: Path | str | None = None) -> HelperConfig:
    """Validate a configuration text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(f"not valid TOML: {exc}", path=path, line=int(m.group(1)) if m else None) from None

    def fail(section: str, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, path=path, line=_line_of(text, section, key),
                           key=f"{section}.{key}" if key else f"[{section}]")

    for section, value in data.items():
        if section not in KEYS:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(KEYS)})", path=path,
                              line=_line_of(text, section, None))
        if not isinstance(value, dict):
            raise fail(section, None, "must be a table")
        for key in value:
            if key not in KEYS[section]:
                raise fail(section, key, f"unknown key (known in [{section}]: {', '.join(KEYS[section])})")

    def get(section: str, key: str) -> Any:
        return data.get(section, {}).get(key, KEYS[section][key])

    def integer(section: str, key: str, low: int, high: int) -> int:
        value = get(section, key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise fail(section, key, f"expected a whole number from {low} to {high}, got {value!r}")
        return value

    def boolean(section: str, key: str) -> bool:
        value = get(section, key)
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)  # the module parameters are 0/1
        raise fail(section, key, f"expected true/false (or 1/0), got {value!r}")

    def choice(section: str, key: str, options: tuple[str, ...] | list[str]) -> str:
        value = get(section, key)
        if value not in options:
            raise fail(section, key, f"expected {' or '.join(repr(o) for o in options)}, got {value!r}")
        return value

    def names(section: str, key: str, table: dict[str, int]) -> tuple[int, ...]:
        value = get(section, key)
        if not isinstance(value, list) or not value or any(v not in table for v in value):
            raise fail(section, key, f"expected a non-empty list of {', '.join(map(repr, table))}, got {value!r}")
        return tuple(dict.fromkeys(table[v] for v in value))

    name = get("helper", "name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name) \
            or len(name) >= NF_CT_HELPER_NAME_LEN:
        raise fail("helper", "name", f"expected 1 to {NF_CT_HELPER_NAME_LEN - 1} letters, digits, - or _, "
                                     f"got {name!r}")
    tcp_queue = get("helper", "tcp_queue")
    if tcp_queue is not None:
        tcp_queue = integer("helper", "tcp_queue", 0, 65535)
    interval = get("helper", "resync_interval")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
        raise fail("helper", "resync_interval", f"expected seconds (0 or more), got {interval!r}")
    # 0 (as opened) or from 1 KiB: the kernel raises smaller requests to SOCK_MIN_RCVBUF anyway.
    event_rcvbuf = get("helper", "event_rcvbuf")
    if event_rcvbuf != 0 or isinstance(event_rcvbuf, bool):
        event_rcvbuf = integer("helper", "event_rcvbuf", 1024, 1 << 30)
    workers = integer("helper", "workers", 1, MAX_WORKERS)
    if workers > 1 and len(f"{name}-{workers - 1}") >= NF_CT_HELPER_NAME_LEN:
        raise fail("helper", "name", f"{name!r} is too long for {workers} workers: the worker helpers are named "
                                     f"{name}-0 to {name}-{workers - 1}, at most {NF_CT_HELPER_NAME_LEN - 1} "
                                     "characters")
    queue = integer("helper", "queue", 0, 65535)
    udp_queues = set(range(queue, queue + workers))
    if max(udp_queues) > 65535:
        raise fail("helper", "workers", f"queues {queue} to {queue + workers - 1} (one per worker) go past 65535")
    if tcp_queue is not None:
        tcp_queues = set(range(tcp_queue, tcp_queue + workers))
        if max(tcp_queues) > 65535:
            raise fail("helper", "workers", f"tcp queues {tcp_queue} to {tcp_queue + workers - 1} (one per worker) "
                                            "go past 65535")
        if workers > 1 and tcp_queue != queue and udp_queues & tcp_queues:
            raise fail("helper", "tcp_queue", f"the workers' queues {queue}-{queue + workers - 1} and tcp queues "
                                              f"{tcp_queue}-{tcp_queue + workers - 1} overlap")
    profile = get("helper", "profile")
    if profile != "auto" and profile not in PROFILES:
        raise fail("helper", "profile", f"expected \"auto\" or one of {', '.join(PROFILES)}, got {profile!r}")

    ports = get("sip", "ports")
    if isinstance(ports, int) and not isinstance(ports, bool):
        ports = [ports]
    if not isinstance(ports, list) or any(isinstance(p, bool) or not isinstance(p, int) for p in ports):
        raise fail("sip", "ports", f"expected a list of port numbers, got {ports!r}")
    expect_max = get("sip", "expect_max")
    expect_max_auto = expect_max == "auto"
    values: dict[str, object] = {
        "ports": ports,
        "sip_timeout": integer("sip", "sip_timeout", 0, 0xFFFFFFFF),
        "sip_direct_signalling": boolean("sip", "sip_direct_signalling"),
        "sip_direct_media": boolean("sip", "sip_direct_media"),
        "sip_external_media": boolean("sip", "sip_external_media"),
    }
    if not expect_max_auto:
        values["expect_max"] = integer("sip", "expect_max", 1, 1 << 31)
    try:
        params = ModuleParams.from_mapping(values)
    except ParameterError as exc:
        key = str(exc).split(":", 1)[0] if ":" in str(exc) else None
        raise fail("sip", key if key in KEYS["sip"] else None, str(exc)) from None

    return HelperConfig(
        name=name,
        families=names("helper", "families", FAMILIES),
        transports=names("helper", "transports", TRANSPORTS),
        queue=queue,
        tcp_queue=tcp_queue,
        queue_maxlen=integer("helper", "queue_maxlen", 1, 1 << 31),
        fail_policy=choice("helper", "fail_policy", FAIL_POLICIES),
        profile=profile,
        resync_interval=float(interval),
        event_rcvbuf=event_rcvbuf,
        params=params,
        expect_max_auto=expect_max_auto,
        log_level=choice("log", "level", LOG_LEVELS),
        path=Path(path) if path is not None else None,
        workers=workers,
    )


def load_config(path: Path | str) -> HelperConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc.strerror}", path=path) from None
    return parse_config(text, path)
