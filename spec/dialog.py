"""Dialog files: the one input format of ``sipct spec``, ``sipct run`` and the
conformance suite.

A dialog is YAML (see docs/dialogs.rst for the reference)::

    name: invite-audio-video
    family: ipv4                 # ipv4 (default) or ipv6
    transport: udp               # default transport of the steps
    params: {sip_direct_media: 1}  # module parameters; absent = defaults
    hosts:
      ua: 192.0.2.2
      server: 198.51.100.2
    steps:
      - send: ua:5060 -> server:5060
        message: |
          INVITE sip:bob@{server.uri} SIP/2.0
          Content-Length: {body_length}

          v=0
        expect:
          verdict: accept
          expectations:
            - udp server:* -> ua:5000 audio
      - wait: 30
      - connect: ua:5070 -> server:5060   # TCP three-way handshake
      - delete-conntrack: ua:5070 -> server:5060   # the router forgets the connection

Errors name the file and line. Loading never touches the network or a clock.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
import yaml

from .expectation import (IPPROTO_TCP, IPPROTO_UDP, PROTO_NAMES, Address, ExpectClass, Expectation, ExpectFlag,
                          ExpectTuple)
from .params import ModuleParams, ParameterError
from .printable import printable
from .profiles import PROFILES
from .natmap import DestinationNat, NatTopology, SourceNat
from .topology import Network, network_of, router_address

PROTOS = {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP}
# The largest UDP payload of one datagram: the 16-bit IPv4 total length less
# its 20-byte header and the 8-byte UDP header; IPv6's payload length counts
# the UDP header but not the 40-byte IPv6 header (jumbograms need a hop-by-hop
# option no dialog sends). udp_sendmsg() refuses more with EMSGSIZE.
UDP_PAYLOAD_MAX = {4: 65_535 - 20 - 8, 6: 65_535 - 8}
# The most one send step may write on a TCP connection, a limit of the format
# that keeps every dialog quick to run: the lab writes a step one segment at a
# time, each read by the peer before the next, and 1 MiB takes about a second,
# lab and spec together. A 100 KB SIP message, far beyond any real one, fits
# ten times.
TCP_WRITE_MAX = 1 << 20
FAMILIES = {"ipv4": 4, "ipv6": 6}
EOLS = {"crlf": b"\r\n", "lf": b"\n", "cr": b"\r"}
# The loader reads every scalar as text, so the base resolver: the safe one's
# per-scalar pattern matching would be thrown away. libyaml's composer loads a
# batch of dialog files several times faster than PyYAML's pure-Python one
# (bench/loader.py), which PyYAML built without libyaml falls back to.
PURE_LOADER = yaml.BaseLoader
LOADER = getattr(yaml, "CBaseLoader", PURE_LOADER)


class DialogError(ValueError):
    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source, self.line, self.message = source, line, message
        where = f"{source}:{line}" if line else source
        # The text is for terminals and may quote the file or name it: printable(); the attributes stay exact.
        super().__init__(printable(f"{where}: {message}"))


@dataclass(frozen=True, slots=True)
class DialogWarning:
    """Something a dialog file most likely does not mean, though it loads."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return printable(f"{self.source}:{self.line}: {self.message}")


# --- the dialog model ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ExpectedExpectation:
    """An expectation written in a dialog, with symbolic hosts."""

    proto: int
    src: str | None  # host name, None for any
    dst: str
    dport: int
    klass: ExpectClass
    flags: ExpectFlag
    nat: tuple[str, int] | None = None  # the NAT part's saved host and port

    def resolve(self, hosts: dict[str, Address], with_nat: bool = False) -> tuple:
        """The comparison key shared with :func:`expectation_key`."""
        src = "*" if self.src is None else str(hosts[self.src])
        dst = str(hosts[self.dst]) if self.dst in hosts else self.dst.strip("[]")
        key = (self.proto, src, str(ipaddress.ip_address(dst)), self.dport, int(self.klass), int(self.flags))
        if with_nat:
            key += (None if self.nat is None else (str(hosts[self.nat[0]]), self.nat[1]),)
        return key

    def __str__(self) -> str:
        flags = ",".join(self.flags.labels())
        nat = f" nat {self.nat[0]}:{self.nat[1]}" if self.nat else ""
        return (f"{PROTO_NAMES[self.proto]} {self.src or '*'}:* -> {self.dst}:{self.dport} {self.klass.label}"
                + (f" {flags}" if flags else "") + nat)


@dataclass(frozen=True, slots=True)
class StepExpect:
    verdict: str | None = None  # "accept" | "drop"
    expectations: tuple[ExpectedExpectation, ...] | None = None
    rules: tuple[str, ...] = ()  # rule ids that must fire


@dataclass(frozen=True, slots=True)
class Send:
    line: int
    src: Endpoint
    dst: Endpoint
    proto: int
    segments: tuple[bytes, ...]  # one datagram (UDP) or the TCP writes (split_at)
    expect: StepExpect | None = None
    via: tuple[Address, int] | None = None  # where the sender sends to, when not the receiver's face

    @property
    def payload(self) -> bytes:
        return b"".join(self.segments)

    def size_problem(self, family: int) -> str | None:
        """Why the lab cannot carry this payload, if it cannot."""
        size = len(self.payload)
        if self.proto == IPPROTO_TCP:
            if size > TCP_WRITE_MAX:
                return (f"{size:,} bytes in one TCP send step are more than the lab writes "
                        f"(at most {TCP_WRITE_MAX:,} bytes a step)")
        elif size > UDP_PAYLOAD_MAX[family]:
            return (f"a UDP payload of {size:,} bytes does not fit in one IPv{family} datagram "
                    f"(at most {UDP_PAYLOAD_MAX[family]:,} bytes); send it over TCP")
        return None


@dataclass(frozen=True, slots=True)
class Connect:
    line: int
    src: Endpoint
    dst: Endpoint


@dataclass(frozen=True, slots=True)
class Wait:
    line: int
    seconds: float


@dataclass(frozen=True, slots=True)
class DeleteConntrack:
    """The router's conntrack of a connection is deleted (``conntrack -D``,
    IPCTNL_MSG_CT_DELETE) while both ends keep it: its expectations go with
    it (nf_ct_remove_expectations), and the connection's next packet makes a
    new conntrack - for TCP one picked up mid-stream."""

    line: int
    src: Endpoint
    dst: Endpoint
    proto: int


Step = Send | Connect | Wait | DeleteConntrack


@dataclass(frozen=True, slots=True)
class Dialog:
    name: str
    source: str
    family: int
    hosts: dict[str, Address]
    steps: tuple[Step, ...]
    params: ModuleParams | None = None  # None: whatever the kernel has (defaults in the spec)
    description: str = ""
    kernels: tuple[str, ...] = ()  # profiles the dialog is meant for; empty = all
    tags: tuple[str, ...] = field(default_factory=tuple)
    nat: NatTopology = field(default_factory=NatTopology)  # the router's NAT rules
    forward: str = "accept"  # the router's forward policy: accept, or drop (established/related, SIP ports, DNAT)
    # What the loader found suspicious in the file. Not part of the dialog's identity: the same dialog written
    # another way (dump_dialog's raw bytes) has none.
    warnings: tuple[DialogWarning, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        # Here rather than in the loader, so that dialogs built in code
        # (conformance/generate.py) are refused the same way.
        for index, step in enumerate(self.steps):
            if isinstance(step, Send) and (problem := step.size_problem(self.family)):
                raise DialogError(self.source, step.line or None, f"steps[{index}].send: {problem}")

    @property
    def effective_params(self) -> ModuleParams:
        return self.params or ModuleParams()

    def host_of(self, addr: Address) -> str | None:
        for name, a in self.hosts.items():
            if a == addr:
                return name
        return None

    def symbolic(self, expectation: Expectation) -> str:
        """An expectation written the way dialog files write them."""
        t = expectation.tuple
        src = "*" if t.src is None else (self.host_of(t.src) or str(t.src))
        dst = self.host_of(t.dst) or str(t.dst)
        flags = ",".join(expectation.flags.labels())
        if t.dst.version == 6 and dst == str(t.dst):
            dst = f"[{dst}]"
        nat = ""
        if expectation.nat is not None:
            nat = f" nat {self.host_of(expectation.nat.addr) or expectation.nat.addr}:{expectation.nat.port}"
        return (f"{PROTO_NAMES.get(t.proto, t.proto)} {src}:* -> {dst}:{t.dport} {expectation.klass.label}"
                + (f" {flags}" if flags else "") + nat)


# --- loading -------------------------------------------------------------------------------------
TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)(\.public)?(\.uri)?\}")
_ENDPOINTS = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*:\s*(\d+)\s*->\s*([A-Za-z_][\w-]*)\s*:\s*(\d+)\s*$")
# The destination is a host or, under NAT, an address (the router's); "nat
# HOST:PORT" asserts the NAT part's saved address and port.
_EXPECTATION = re.compile(
    r"^\s*(udp|tcp)\s+(\*|[A-Za-z_][\w-]*):\*\s*->\s*([A-Za-z_][\w-]*|[0-9.]+|\[[0-9A-Fa-f:.]+\]):(\d+)\s+"
    r"(signalling|audio|video|image)(?:\s+([A-Z,]+))?(?:\s+nat\s+([A-Za-z_][\w-]*):(\d+))?\s*$")


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.templates = True
        self.nat_topology = NatTopology()
        self.warnings: list[DialogWarning] = []

    def fail(self, node: yaml.Node | None, message: str) -> DialogError:
        line = node.start_mark.line + 1 if node is not None else None
        return DialogError(self.source, line, message)

    def mapping(self, node: yaml.Node, what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.fail(key, f"{what}: keys must be plain names")
            if key.value in out:
                raise self.fail(key, f"{what}: duplicate key {key.value!r}")
            out[key.value] = value
        return out

    def warn(self, node: yaml.Node, message: str) -> None:
        self.warnings.append(DialogWarning(self.source, node.start_mark.line + 1, message))

    def boolean(self, node: yaml.Node, what: str) -> bool:
        value = self.scalar(node, what)
        if value not in ("true", "false"):
            raise self.fail(node, f"{what} must be true or false")
        return value == "true"

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        return node.value

    def number(self, node: yaml.Node, what: str) -> float:
        text = self.scalar(node, what)
        try:
            return float(text)
        except ValueError:
            raise self.fail(node, f"{what} must be a number, not {text!r}") from None

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return list(node.value)

    def unknown_keys(self, fields: dict[str, yaml.Node], allowed: set[str], what: str) -> None:
        for key, value in fields.items():
            if key not in allowed:
                raise self.fail(value, f"{what}: unknown key {key!r}{_did_you_mean(key, allowed)} "
                                       f"(allowed: {', '.join(sorted(allowed))})")

    # --- top level ---------------------------------------------------------------------------
    def dialog(self, root: yaml.Node | None) -> Dialog:
        if root is None:
            raise DialogError(self.source, None, "the file is empty")
        top = self.mapping(root, "dialog")
        self.unknown_keys(top, {"name", "description", "family", "transport", "params", "hosts", "steps",
                                "kernels", "tags", "templates", "nat", "forward"}, "dialog")
        if "templates" in top:
            self.templates = self.boolean(top["templates"], "templates")
        for required in ("hosts", "steps"):
            if required not in top:
                raise self.fail(root, f"dialog: missing {required!r}")
        name = self.scalar(top["name"], "name") if "name" in top else Path(self.source).stem
        family_name = self.scalar(top["family"], "family") if "family" in top else "ipv4"
        if family_name not in FAMILIES:
            raise self.fail(top["family"], f"family must be ipv4 or ipv6, not {family_name!r}")
        family = FAMILIES[family_name]
        transport = self.scalar(top["transport"], "transport") if "transport" in top else "udp"
        if transport not in PROTOS:
            raise self.fail(top["transport"], f"transport must be udp or tcp, not {transport!r}")
        params = self.params(top["params"]) if "params" in top else None
        hosts = self.hosts(top["hosts"], family)
        nat = self.nat(top["nat"], hosts, family) if "nat" in top else NatTopology()
        forward = self.scalar(top["forward"], "forward") if "forward" in top else "accept"
        if forward not in ("accept", "drop"):
            raise self.fail(top["forward"], f"forward must be accept or drop (the router's forward policy), "
                                            f"not {forward!r}")
        self.nat_topology = nat
        kernels: tuple[str, ...] = ()
        if "kernels" in top:
            kernels = tuple(self.scalar(n, "kernels[]") for n in self.sequence(top["kernels"], "kernels"))
            for node, k in zip(top["kernels"].value, kernels):
                if k not in PROFILES:
                    raise self.fail(node, f"unknown kernel profile {k!r} (known: {', '.join(PROFILES)})")
        tags = tuple(self.scalar(n, "tags[]") for n in self.sequence(top["tags"], "tags")) if "tags" in top else ()
        steps = tuple(self.step(n, i, hosts, family, PROTOS[transport])
                      for i, n in enumerate(self.sequence(top["steps"], "steps")))
        if not steps:
            raise self.fail(top["steps"], "steps: a dialog needs at least one step")
        description = self.scalar(top["description"], "description") if "description" in top else ""
        return Dialog(name, self.source, family, hosts, steps, params, description, kernels, tags, nat, forward,
                      tuple(self.warnings))

    def nat(self, node: yaml.Node, hosts: dict[str, Address], family: int) -> NatTopology:
        """``nat:`` - the router's nat rules, first match wins in each chain::

            nat:
              - masquerade: 192.0.2.0/24      # a network, a host, or host:port
              - snat: phone:5060
                to: 203.0.113.1:40000         # an address, or address:port
              - dnat: 203.0.113.1:5060        # what the outside sends to
                to: pbx:5060
                transport: udp                # optional: udp or tcp only
        """
        snat: list[SourceNat] = []
        dnat: list[DestinationNat] = []
        for i, item in enumerate(self.sequence(node, "nat")):
            what = f"nat[{i}]"
            fields = self.mapping(item, what)
            kinds = [k for k in ("masquerade", "snat", "dnat") if k in fields]
            if len(kinds) != 1:
                unknown = [k for k in fields if k not in ("masquerade", "snat", "dnat", "to", "transport")]
                said = f" (unknown key {unknown[0]!r}{_did_you_mean(unknown[0], ('masquerade', 'snat', 'dnat'))})" \
                    if unknown else ""
                raise self.fail(item, f"{what}: a rule is exactly one of masquerade, snat, dnat{said}")
            kind = kinds[0]
            proto = None
            if "transport" in fields:
                name = self.scalar(fields["transport"], f"{what}.transport")
                if name not in PROTOS:
                    raise self.fail(fields["transport"], f"{what}.transport must be udp or tcp, not {name!r}")
                proto = PROTOS[name]
            if kind == "dnat":
                self.unknown_keys(fields, {"dnat", "to", "transport"}, what)
                if "to" not in fields:
                    raise self.fail(item, f"{what}: dnat needs to: HOST:PORT")
                addr, port = self.nat_address(fields["dnat"], f"{what}.dnat", hosts, family, need_port=True)
                to_host, to_port = self.host_port(fields["to"], f"{what}.to", hosts)
                assert port is not None
                dnat.append(DestinationNat(addr, port, hosts[to_host], to_port, proto))
                continue
            self.unknown_keys(fields, {kind, "to", "transport"} if kind == "snat" else {kind, "transport"}, what)
            inside, host, sport = self.nat_source(fields[kind], f"{what}.{kind}", hosts, family)
            to: Address | None = None
            to_port: int | None = None
            if kind == "snat":
                if "to" not in fields:
                    raise self.fail(item, f"{what}: snat needs to: ADDRESS[:PORT] (masquerade needs none)")
                to, to_port = self.nat_address(fields["to"], f"{what}.to", hosts, family, need_port=False)
            snat.append(SourceNat(inside, to, to_port, host, sport, proto))
        return NatTopology(tuple(snat), tuple(dnat))

    def host_port(self, node: yaml.Node, what: str, hosts: dict[str, Address]) -> tuple[str, int]:
        text = self.scalar(node, what)
        match = re.fullmatch(r"\s*([A-Za-z_][\w-]*)\s*:\s*(\d+)\s*", text)
        if not match or match.group(1) not in hosts or not 1 <= int(match.group(2)) <= 65535:
            raise self.fail(node, f"{what}: expected HOST:PORT of a host of the dialog, got {text!r}")
        return match.group(1), int(match.group(2))

    def nat_source(self, node: yaml.Node, what: str, hosts: dict[str, Address],
                   family: int) -> tuple[Network, Address | None, int | None]:
        text = self.scalar(node, what).strip()
        name, _, port = text.partition(":") if not text.startswith("[") and text.count(":") <= 1 else (text, "", "")
        if name in hosts:
            if port and not (port.isdigit() and 1 <= int(port) <= 65535):
                raise self.fail(node, f"{what}: {port!r} is not a port")
            return network_of(hosts[name]), hosts[name], int(port) if port else None
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise self.fail(node, f"{what}: expected a network, HOST or HOST:PORT, got {text!r}") from None
        if "/" in text and net.network_address != ipaddress.ip_interface(text).ip:
            raise self.fail(node, f"{what}: {text} has host bits set: write the network ({net}) or one address "
                                  f"without a prefix length")
        if net.version != family:
            raise self.fail(node, f"{what}: {net} is not an IPv{family} network")
        return net, None, None

    def nat_address(self, node: yaml.Node, what: str, hosts: dict[str, Address], family: int, *,
                    need_port: bool, host_ok: bool = False) -> tuple[Address, int | None]:
        """An address NAT maps to: the router's own address in a network of
        the dialog, or one in no host's network (the hosts route it to the
        router); another address of a host's network would be looked for on
        its link. ``host_ok``: a host's own address will do (where a step is
        sent, ``via:``)."""
        text = self.scalar(node, what).strip()
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([0-9.]+):(\d+)|([0-9A-Fa-f:.]+)", text)
        if not match:
            form = "ADDRESS:PORT ([IPv6]:PORT)" if need_port else "ADDRESS or ADDRESS:PORT ([IPv6]:PORT)"
            name = text.partition(":")[0]
            why = (f": {name!r} is a host; NAT maps to an address (the router's own in a network of the dialog, "
                   f"or one in no host's network)") if name in hosts else ""
            raise self.fail(node, f"{what}: expected {form}, got {text!r}{why}")
        addr_text = match.group(1) or match.group(3) or match.group(5)
        port_text = match.group(2) or match.group(4)
        try:
            addr = ipaddress.ip_address(addr_text)
        except ValueError:
            raise self.fail(node, f"{what}: {addr_text!r} is not an IP address") from None
        if addr.version != family:
            raise self.fail(node, f"{what}: {addr} is not an IPv{family} address")
        if need_port and port_text is None:
            raise self.fail(node, f"{what}: give the port too (ADDRESS:PORT)")
        if port_text is not None and not 1 <= int(port_text) <= 65535:
            raise self.fail(node, f"{what}: port {port_text} is out of range")
        host_nets = {network_of(a) for a in hosts.values()}
        if network_of(addr) in host_nets and addr != router_address(network_of(addr)) \
                and not (host_ok and addr in hosts.values()):
            raise self.fail(node, f"{what}: {addr} is in the hosts' network {network_of(addr)} but not the "
                                  f"router's address there ({router_address(network_of(addr))}): nothing would "
                                  f"answer for it on that link")
        return addr, int(port_text) if port_text is not None else None

    def params(self, node: yaml.Node) -> ModuleParams:
        fields = self.mapping(node, "params")
        values: dict[str, object] = {}
        for key, value in fields.items():
            if isinstance(value, yaml.SequenceNode):
                values[key] = [self.scalar(v, f"params.{key}[]") for v in value.value]
            else:
                values[key] = self.scalar(value, f"params.{key}")
        try:
            return ModuleParams.from_mapping(values)
        except (ParameterError, ValueError) as exc:
            raise self.fail(node, f"params: {exc}") from None

    def hosts(self, node: yaml.Node, family: int) -> dict[str, Address]:
        hosts: dict[str, Address] = {}
        for name, value in self.mapping(node, "hosts").items():
            if not re.fullmatch(r"[A-Za-z_][\w-]*", name):
                raise self.fail(value, f"hosts: {name!r} is not a valid host name")
            text = self.scalar(value, f"hosts.{name}")
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                raise self.fail(value, f"hosts.{name}: {text!r} is not an IP address") from None
            if addr.version != family:
                raise self.fail(value, f"hosts.{name}: {addr} is not an IPv{family} address (family is "
                                       f"ipv{family})")
            net = network_of(addr)
            if addr == router_address(net):
                raise self.fail(value, f"hosts.{name}: {addr} is the lab router's address in {net}; "
                                       f"use another host address")
            if addr.version == 4 and addr in (net.network_address, net.broadcast_address):
                raise self.fail(value, f"hosts.{name}: {addr} is not a host address of {net}")
            if addr in hosts.values():
                raise self.fail(value, f"hosts.{name}: {addr} is already used by another host")
            hosts[name] = addr
        if len(hosts) < 2:
            raise self.fail(node, "hosts: a dialog needs at least two hosts")
        return hosts

    # --- steps ------------------------------------------------------------------------------------
    def endpoints(self, node: yaml.Node, hosts: dict[str, Address], what: str) -> tuple[Endpoint, Endpoint]:
        text = self.scalar(node, what)
        match = _ENDPOINTS.match(text)
        if not match:
            raise self.fail(node, f"{what}: expected 'HOST:PORT -> HOST:PORT', got {text!r}")
        src_host, sport, dst_host, dport = match.groups()
        for host in (src_host, dst_host):
            if host not in hosts:
                raise self.fail(node, f"{what}: unknown host {host!r} (hosts: {', '.join(hosts)})")
        if network_of(hosts[src_host]) == network_of(hosts[dst_host]):
            raise self.fail(node, f"{what}: {src_host} and {dst_host} share the network "
                                  f"{network_of(hosts[src_host])}, so the packet would not cross the router "
                                  f"where the helper runs; put them in different /24 (/64) networks")
        for port in (sport, dport):
            if not 1 <= int(port) <= 65535:
                raise self.fail(node, f"{what}: port {port} is out of range")
        return Endpoint(src_host, int(sport)), Endpoint(dst_host, int(dport))

    def step(self, node: yaml.Node, index: int, hosts: dict[str, Address], family: int, default_proto: int) -> Step:
        what = f"steps[{index}]"
        fields = self.mapping(node, what)
        line = node.start_mark.line + 1
        kinds = [k for k in ("send", "connect", "wait", "delete-conntrack") if k in fields]
        if len(kinds) != 1:
            raise self.fail(node, f"{what}: a step is exactly one of send, connect, wait, delete-conntrack")
        kind = kinds[0]
        if kind == "delete-conntrack":
            self.unknown_keys(fields, {"delete-conntrack", "transport"}, what)
            src, dst = self.endpoints(fields["delete-conntrack"], hosts, f"{what}.delete-conntrack")
            return DeleteConntrack(line, src, dst, self.transport(fields, what, default_proto))
        if kind == "wait":
            self.unknown_keys(fields, {"wait"}, what)
            seconds = self.number(fields["wait"], f"{what}.wait")
            if seconds < 0:
                raise self.fail(fields["wait"], f"{what}.wait: time cannot go backwards")
            return Wait(line, seconds)
        if kind == "connect":
            self.unknown_keys(fields, {"connect"}, what)
            src, dst = self.endpoints(fields["connect"], hosts, f"{what}.connect")
            return Connect(line, src, dst)

        self.unknown_keys(fields, {"send", "transport", "message", "messages", "raw", "eol", "split_at",
                                   "expect", "no_blank_line", "via"}, what)
        src, dst = self.endpoints(fields["send"], hosts, f"{what}.send")
        proto = self.transport(fields, what, default_proto)
        eol = EOLS["crlf"]
        if "eol" in fields:
            name = self.scalar(fields["eol"], f"{what}.eol")
            if name not in EOLS:
                raise self.fail(fields["eol"], f"{what}.eol must be one of {', '.join(EOLS)}")
            eol = EOLS[name]
        bodies = [k for k in ("message", "messages", "raw") if k in fields]
        if len(bodies) != 1:
            raise self.fail(node, f"{what}: give exactly one of message, messages, raw")
        render = _Renderer(hosts, family, self.templates, self.nat_topology)
        texts: list[tuple[yaml.Node, str, bytes]] = []  # the messages written as text: node, what, bytes
        if bodies[0] == "message":
            payload = render.message(self.scalar(fields["message"], f"{what}.message"), eol)
            texts.append((fields["message"], f"{what}.message", payload))
        elif bodies[0] == "raw":
            payload = self.raw(fields["raw"], f"{what}.raw", render)
        else:
            if proto != IPPROTO_TCP:
                raise self.fail(fields["messages"], f"{what}.messages: several messages in one payload need "
                                                    f"transport tcp (UDP sends one message per datagram)")
            parts = []
            for i, item in enumerate(self.sequence(fields["messages"], f"{what}.messages")):
                if isinstance(item, yaml.MappingNode):
                    sub = self.mapping(item, f"{what}.messages[{i}]")
                    self.unknown_keys(sub, {"raw"}, f"{what}.messages[{i}]")
                    parts.append(self.raw(sub["raw"], f"{what}.messages[{i}].raw", render))
                else:
                    parts.append(render.message(self.scalar(item, f"{what}.messages[{i}]"), eol))
                    texts.append((item, f"{what}.messages[{i}]", parts[-1]))
            payload = b"".join(parts)
        self.blank_lines(fields, what, texts, eol)
        segments: tuple[bytes, ...] = (payload,)
        if "split_at" in fields:
            if proto != IPPROTO_TCP:
                raise self.fail(fields["split_at"], f"{what}.split_at: only TCP payloads can be split")
            offsets = []
            for item in self.sequence(fields["split_at"], f"{what}.split_at"):
                value = self.scalar(item, f"{what}.split_at[]")
                if not value.isdigit() or not 0 < int(value) < len(payload):
                    raise self.fail(item, f"{what}.split_at: {value!r} is not an offset inside the "
                                          f"{len(payload)}-byte payload")
                offsets.append(int(value))
            if offsets != sorted(set(offsets)):
                raise self.fail(fields["split_at"], f"{what}.split_at: offsets must increase")
            bounds = [0, *offsets, len(payload)]
            segments = tuple(payload[a:b] for a, b in zip(bounds, bounds[1:]))
        if not payload:
            raise self.fail(node, f"{what}: the payload is empty")
        expect = self.expect(fields["expect"], f"{what}.expect", hosts) if "expect" in fields else None
        via = None
        if "via" in fields:
            addr, port = self.nat_address(fields["via"], f"{what}.via", hosts, family, need_port=True, host_ok=True)
            via = (addr, port)
        return Send(line, src, dst, proto, segments, expect, via)

    def blank_lines(self, fields: dict[str, yaml.Node], what: str, texts: list[tuple[yaml.Node, str, bytes]],
                    eol: bytes) -> None:
        """A warning for each message text whose headers no blank line ends,
        unless the step says ``no_blank_line: true``. ``raw`` payloads are not
        checked: they are double-quoted strings, which keep every byte, written
        to send exact (often malformed) bytes - a missing blank line there is
        what the file says, not what YAML did to it."""
        lacking = [(node, where) for node, where, data in texts if eol * 2 not in data]
        if "no_blank_line" in fields and self.boolean(fields["no_blank_line"], f"{what}.no_blank_line"):
            if not lacking:
                raise self.fail(fields["no_blank_line"], f"{what}.no_blank_line: every message text ends its "
                                                         f"headers with a blank line: there is nothing to excuse")
            return
        for node, where in lacking:
            self.warn(node, f"{where}: no blank line ends the headers (over TCP the kernel helper then skips the "
                            f"message: tcp.no-blank-line); a '|' block drops its trailing blank lines, '|+' keeps "
                            f"them; no_blank_line: true on the step says it is meant")

    def transport(self, fields: dict[str, yaml.Node], what: str, default_proto: int) -> int:
        if "transport" not in fields:
            return default_proto
        name = self.scalar(fields["transport"], f"{what}.transport")
        if name not in PROTOS:
            raise self.fail(fields["transport"], f"{what}.transport must be udp or tcp")
        return PROTOS[name]

    def raw(self, node: yaml.Node, what: str, render: "_Renderer") -> bytes:
        text = self.scalar(node, what)
        try:
            return render.substitute(text).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise self.fail(node, f"{what}: raw payloads are bytes: character {text[exc.start]!r} is above "
                                  f"\\xff (write bytes as \\xNN escapes in a double-quoted string)") from None

    def expect(self, node: yaml.Node, what: str, hosts: dict[str, Address]) -> StepExpect:
        fields = self.mapping(node, what)
        self.unknown_keys(fields, {"verdict", "expectations", "rules"}, what)
        verdict = None
        if "verdict" in fields:
            verdict = self.scalar(fields["verdict"], f"{what}.verdict")
            if verdict not in ("accept", "drop"):
                raise self.fail(fields["verdict"], f"{what}.verdict must be accept or drop")
        expectations = None
        if "expectations" in fields:
            items = []
            for item in self.sequence(fields["expectations"], f"{what}.expectations"):
                items.append(self.expectation(item, f"{what}.expectations[]", hosts))
            expectations = tuple(items)
        rule_ids: tuple[str, ...] = ()
        if "rules" in fields:
            from .rules import RULES
            rule_ids = tuple(self.scalar(n, f"{what}.rules[]") for n in self.sequence(fields["rules"], what))
            for n, rid in zip(fields["rules"].value, rule_ids):
                if rid not in RULES:
                    raise self.fail(n, f"{what}.rules: unknown rule {rid!r}")
        return StepExpect(verdict, expectations, rule_ids)

    def expectation(self, node: yaml.Node, what: str, hosts: dict[str, Address]) -> ExpectedExpectation:
        text = self.scalar(node, what)
        match = _EXPECTATION.match(text)
        if not match:
            raise self.fail(node, f"{what}: expected 'udp|tcp SRC:* -> DST:PORT CLASS [FLAGS]', got {text!r}")
        proto, src, dst, dport, klass, flags, nat_host, nat_port = match.groups()
        for host in (src, dst, nat_host):
            if host is not None and host != "*" and host not in hosts and not host[0] in "0123456789[":
                raise self.fail(node, f"{what}: unknown host {host!r}")
        if dst not in hosts:
            try:
                ipaddress.ip_address(dst.strip("[]"))
            except ValueError:
                raise self.fail(node, f"{what}: {dst!r} is neither a host nor an address") from None
        flag_value = ExpectFlag.NONE
        for name in (flags.split(",") if flags else []):
            if name not in ("PERMANENT", "INACTIVE", "USERSPACE"):
                raise self.fail(node, f"{what}: unknown flag {name!r}")
            flag_value |= ExpectFlag[name]
        return ExpectedExpectation(PROTOS[proto], None if src == "*" else src, dst, int(dport),
                                   ExpectClass[klass.upper()], flag_value,
                                   (nat_host, int(nat_port)) if nat_host else None)


class _Renderer:
    """Template substitution: ``{host}`` is the address, ``{host.uri}`` the
    address as a SIP URI host (IPv6 in brackets), ``{body_length}`` the length
    of the message body (bytes after the first blank line)."""

    def __init__(self, hosts: dict[str, Address], family: int, enabled: bool = True,
                 nat: NatTopology | None = None) -> None:
        self.hosts = hosts
        self.family = family
        self.enabled = enabled
        self.nat = nat or NatTopology()

    def substitute(self, text: str, body_length: int | None = None) -> str:
        if not self.enabled:
            return text

        def replace(match: re.Match[str]) -> str:
            name, public, uri = match.group(1), match.group(2), match.group(3)
            if name == "body_length" and body_length is not None and not uri and not public:
                return str(body_length)
            if name in self.hosts:
                addr = self.hosts[name]
                if public:
                    addr = public_address(self.nat, self.hosts, name)
                return f"[{addr}]" if uri and addr.version == 6 else str(addr)
            return match.group(0)

        return TEMPLATE.sub(replace, text)

    def message(self, text: str, eol: bytes) -> bytes:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        joined = eol.decode().join(lines) + eol.decode()
        blank = eol.decode() * 2
        cut = joined.find(blank)
        body = joined[cut + len(blank):] if cut >= 0 else ""
        # The body length is that of the rendered body, so render it first.
        body_bytes = self.substitute(body).encode("utf-8")
        return self.substitute(joined, len(body_bytes)).encode("utf-8")


def public_address(nat: NatTopology, hosts: dict[str, Address], name: str) -> Address:
    """``{host.public}``: the address hosts on the other side of the NAT see
    ``host`` at - a port forward's address, the address its source NAT
    gives it (masquerade: the router's address in the first network of
    another host outside), or its own."""
    addr = hosts[name]
    for d in nat.dnat:
        if d.to == addr:
            return d.addr
    for rule in nat.snat:
        if rule.host == addr or (rule.host is None and addr in rule.inside):
            if rule.to is not None:
                return rule.to
            for other in hosts.values():
                if other not in rule.inside:
                    return router_address(network_of(other))
    return addr


def load_dialog(path: str | Path, *, loader: type = LOADER) -> Dialog:
    """``loader``: the PyYAML loader class that composes the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DialogError(str(path), None, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DialogError(str(path), None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_dialog(text, str(path), loader=loader)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _yaml_hint(text: str, exc: yaml.MarkedYAMLError) -> str:
    """What usually causes the error on that line: YAML reads an unquoted
    ``[2001:db8::1]:5060`` as the start of a list."""
    lines = [m.line for m in (exc.context_mark, exc.problem_mark) if m is not None]
    source_lines = text.splitlines()
    if any(re.search(r":\s*\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]", source_lines[n]) for n in lines
           if n < len(source_lines)):
        return ' (an IPv6 address in brackets must be quoted: "[2001:db8::1]:5060")'
    return ""


def parse_dialog(text: str, source: str = "<dialog>", *, loader: type = LOADER) -> Dialog:
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.reader.ReaderError as exc:
        # It has no mark, and its position counts characters in one composer, bytes in the other: find the
        # character itself (the reader stops at its first occurrence).
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        at = text.find(char)
        raise DialogError(source, text.count("\n", 0, at) + 1 if at >= 0 else None,
                          f"YAML: the character {char!r} cannot be written as it is; write it as an escape "
                          f"in a double-quoted string") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise DialogError(source, mark.line + 1 if mark else None,
                          f"YAML: {exc.problem}{_yaml_hint(text, exc)}") from None
    except yaml.YAMLError as exc:
        raise DialogError(source, None, f"YAML: {exc}") from None
    return _Loader(source).dialog(root)


def expectation_key(e: Expectation, with_nat: bool = False) -> tuple:
    """How an actual expectation compares with an :class:`ExpectedExpectation`:
    what a dialog's ``expect:`` entry writes of it - protocol, source (or any),
    destination and port, class, flags (``with_nat``: and the NAT part's saved
    address and port). Not which row of the table it is: a
    dialog names no family, source port or master, so tables and events are
    compared by :func:`sipct.spec.expectation.expectation_key`."""
    t: ExpectTuple = e.tuple
    key = (t.proto, "*" if t.src is None else str(t.src), str(t.dst), t.dport, int(e.klass), int(e.flags))
    if with_nat:
        key += (None if e.nat is None else (str(e.nat.addr), e.nat.port),)
    return key


# --- writing ---------------------------------------------------------------------------------------
def quote_bytes(data: bytes, indent: str) -> str:
    """A YAML double-quoted scalar holding exactly ``data`` (as latin-1 text),
    broken after every line feed so a reader sees the message's lines."""
    out = ['"']
    at_line_start = True
    for byte in data:
        ch = chr(byte)
        if at_line_start and ch in " \t":
            out.append(f"\\x{byte:02x}")  # YAML would strip it from a continuation line
        elif ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\n":
            out.append("\\n\\\n" + indent)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
        at_line_start = ch == "\n"
    out.append('"')
    return "".join(out)


def dump_dialog(dialog: Dialog, *, comment: str = "") -> str:
    """The dialog as a file that :func:`load_dialog` reads back to an equal dialog
    (payloads are written as ``raw`` bytes)."""
    proto_names = {v: k for k, v in PROTOS.items()}
    lines = [f"# {line}".rstrip() for line in comment.splitlines()] if comment else []
    lines.append(f"name: {yaml_scalar(dialog.name)}")
    if dialog.description:
        lines.append(f"description: {yaml_scalar(dialog.description)}")
    lines.append(f"family: ipv{dialog.family}")
    lines.append("templates: false  # the payloads are exact bytes")
    if dialog.params is not None:
        lines.append("params:")
        for key, value in dialog.params.as_mapping().items():
            lines.append(f"  {key}: {value}")
    if dialog.kernels:
        lines.append(f"kernels: [{', '.join(yaml_scalar(k) for k in dialog.kernels)}]")
    lines.append("hosts:")
    for name, addr in dialog.hosts.items():
        lines.append(f"  {name}: {yaml_scalar(str(addr))}")
    lines.extend(nat_lines(dialog))
    if dialog.forward != "accept":
        lines.append(f"forward: {dialog.forward}")
    lines.append("steps:")
    for step in dialog.steps:
        if isinstance(step, Wait):
            lines.append(f"  - wait: {step.seconds:g}")
        elif isinstance(step, Connect):
            lines.append(f"  - connect: {step.src} -> {step.dst}")
        elif isinstance(step, DeleteConntrack):
            lines.append(f"  - delete-conntrack: {step.src} -> {step.dst}")
            lines.append(f"    transport: {proto_names[step.proto]}")
        else:
            lines.append(f"  - send: {step.src} -> {step.dst}")
            lines.append(f"    transport: {proto_names[step.proto]}")
            lines.append(f"    raw: {quote_bytes(step.payload, '      ')}")
            if (split := split_at_line(step)) is not None:
                lines.append(split)
            if step.via is not None:
                lines.append(f"    via: {yaml_scalar(_addr_port(*step.via))}")
    return "\n".join(lines) + "\n"


def _addr_port(addr: Address, port: int | None) -> str:
    if port is None:
        return str(addr)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def nat_lines(dialog: Dialog) -> list[str]:
    """The ``nat:`` section of a dialog as the loader reads it (none without NAT)."""
    nat = dialog.nat
    if not nat:
        return []
    proto_names = {v: k for k, v in PROTOS.items()}
    lines = ["nat:"]
    for r in nat.snat:
        if r.host is not None:
            name = dialog.host_of(r.host)
            if name is None:
                raise ValueError(f"{r}: the source NAT of an address that is no host of the dialog")
            what = name if r.sport is None else f"{name}:{r.sport}"
        else:
            what = str(r.inside)
        if r.to is None:
            lines.append(f"  - masquerade: {yaml_scalar(what)}")
        else:
            lines.append(f"  - snat: {yaml_scalar(what)}")
            lines.append(f"    to: {yaml_scalar(_addr_port(r.to, r.port))}")
        if r.proto is not None:
            lines.append(f"    transport: {proto_names[r.proto]}")
    for d in nat.dnat:
        name = dialog.host_of(d.to)
        if name is None:
            raise ValueError(f"{d}: a port forward to an address that is no host of the dialog")
        lines.append(f"  - dnat: {yaml_scalar(_addr_port(d.addr, d.port))}")
        lines.append(f"    to: {yaml_scalar(f'{name}:{d.to_port}')}")
        if d.proto is not None:
            lines.append(f"    transport: {proto_names[d.proto]}")
    return lines


def split_at_line(step: Send) -> str | None:
    """The ``split_at:`` line of a send step written in several TCP writes."""
    if len(step.segments) < 2:
        return None
    offsets, total = [], 0
    for segment in step.segments[:-1]:
        total += len(segment)
        offsets.append(str(total))
    return f"    split_at: [{', '.join(offsets)}]"


def yaml_scalar(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
