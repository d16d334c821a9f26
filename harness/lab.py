"""A network-namespace lab: endpoint hosts on both sides of a router whose
netfilter attaches the kernel's SIP conntrack helper (nf_conntrack_sip).

Topology.  One namespace per host plus one router namespace.  Hosts whose
subnets overlap share one L2 segment: a Linux bridge in the router namespace
that carries the router's addresses (a.b.c.1/24, <prefix>::1/64) for every
subnet on it; each host hangs off its bridge by one veth (router side vN,
host side eth0).  A bridge rather than per-host /32 routes because the host
addresses live in real /24 and /64 subnets: with a bridge, same-subnet hosts
reach each other on-link like on a real LAN, without proxy ARP/NDP on the
router, and the routed path between subnets -- the one the SIP helper is
meant to watch -- is plain IP forwarding.  bridge-nf-call-ip(6)tables is
switched off in the router namespace so bridged (same-segment) frames do not
also pass the inet hooks through br_netfilter, which is built into this
kernel; only routed traffic meets conntrack and the helper.

Everything is created inside the lab's own namespaces (the veth pair is
created in the router namespace with its peer placed straight into the host
namespace), sysctls are written through the namespace-local /proc/sys/net,
and the nftables ruleset is loaded inside the router namespace, so nothing
outside the lab is touched.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from types import TracebackType

from pyroute2 import IPRoute, NFCTSocket
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT
from sipct.spec.natmap import NatTopology
from sipct.spec.topology import network_of, router_address
from sipct.harness.drivers import Delivery, Family, SocketDriver, TcpConnection
from sipct.netlink.interrupts import doing, shielded
from sipct.harness.labns import create_tracked_netns, destroy_tracked_netns, lab_namespaces, lab_prefix
from sipct.netlink.netns import in_netns, open_netns
from sipct.harness.sweep import remove_stale_namespaces

__all__ = [
    "DOCUMENTATION_NETWORKS",
    "Delivery",
    "HostSpec",
    "Lab",
    "LabError",
    "TcpConnection",
    "lab_namespaces",
    "remove_stale_namespaces",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# RFC 5737 and RFC 3849: the lab only ever carries documentation addresses.
DOCUMENTATION_NETWORKS: tuple[IPNetwork, ...] = (
    IPv4Network("192.0.2.0/24"),
    IPv4Network("198.51.100.0/24"),
    IPv4Network("203.0.113.0/24"),
    IPv6Network("2001:db8::/32"),
)

_HOST_NAME = re.compile(r"[a-z][a-z0-9_]{0,23}")
_ROUTER_ROLE = "router"
DEFAULT_TIMEOUT = 0.2  # seconds a send waits before calling the packet dropped


class LabError(RuntimeError):
    """The lab could not be built (the message says which step failed)."""


@dataclass(frozen=True)
class HostSpec:
    """An endpoint host: its name and its addresses (strings are accepted)."""

    name: str
    addresses: tuple[IPAddress, ...] = field(default=())

    def __post_init__(self) -> None:
        if not _HOST_NAME.fullmatch(self.name) or self.name == _ROUTER_ROLE:
            raise ValueError(
                f"host name {self.name!r}: use [a-z][a-z0-9_]* (at most 24), not 'router'"
            )
        addresses = tuple(ipaddress.ip_address(a) for a in self.addresses)
        if not addresses:
            raise ValueError(f"host {self.name!r} has no address")
        object.__setattr__(self, "addresses", addresses)

    def address(self, family: int) -> IPAddress:
        """The host's first address of IP version `family` (4 or 6)."""
        for addr in self.addresses:
            if addr.version == family:
                return addr
        raise LookupError(f"host {self.name!r} has no IPv{family} address")


@dataclass(frozen=True)
class Segment:
    """One L2 segment: a router-side bridge and the subnets/hosts on it."""

    bridge: str
    subnets: tuple[IPNetwork, ...]
    hosts: tuple[str, ...]


def plan_segments(hosts: Sequence[HostSpec]) -> list[Segment]:
    """Group hosts into bridges: hosts that share any subnet share a segment."""
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate host names in {names}")
    seen: dict[IPAddress, str] = {}
    for host in hosts:
        for addr in host.addresses:
            if not any(addr in net for net in DOCUMENTATION_NETWORKS):
                raise ValueError(
                    f"{addr} of {host.name!r} is not a documentation address "
                    "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)"
                )
            net = network_of(addr)
            if addr == router_address(net):
                raise ValueError(f"{addr} of {host.name!r} is the router's address in {net}")
            if addr.version == 4 and addr in (net.network_address, net.broadcast_address):
                raise ValueError(f"{addr} of {host.name!r} is not a host address of {net}")
            if addr in seen:
                raise ValueError(f"{addr} is given to both {seen[addr]!r} and {host.name!r}")
            seen[addr] = host.name

    # Union-find over hosts, joined through the subnets they have in common.
    parent = list(range(len(hosts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[IPNetwork, int] = {}
    for i, host in enumerate(hosts):
        for addr in host.addresses:
            j = owner.setdefault(network_of(addr), i)
            parent[root(i)] = root(j)

    groups: dict[int, list[int]] = {}
    for i in range(len(hosts)):
        groups.setdefault(root(i), []).append(i)
    segments = []
    for k, members in enumerate(groups.values()):
        subnets = dict.fromkeys(network_of(a) for i in members for a in hosts[i].addresses)
        segments.append(Segment(f"br{k}", tuple(subnets), tuple(hosts[i].name for i in members)))
    return segments


def render_ruleset(sip_ports: Sequence[int], helper: bool, helper_type: str = "sip") -> str:
    """The router's nftables ruleset.

    ``helper_type`` is the name of the helper the ``ct helper`` objects
    attach (nft_ct_helper_obj_init() looks it up among kernel and userspace
    helpers alike): "sip" is nf_conntrack_sip, the reference helper runs
    under another name next to it (sipct.harness.threeway).

    The helper is attached in a filter-priority forward chain: `ct helper
    set` needs the conntrack that the conntrack hook (priority -200) has
    created by then, and only takes effect on a not-yet-confirmed entry,
    i.e. on the first packet of a connection.  The helper itself then runs
    from the confirm hook at postrouting, on that very packet.

    Without the helper the chain still holds a ct expression: any ct
    expression makes the namespace register the conntrack hooks
    (nf_ct_netns_get), which are otherwise absent from a fresh namespace.
    The baseline thus differs from the helper lab by the helper alone.
    """
    chain = "type filter hook forward priority filter; policy accept;"
    if not helper:
        return (
            f"table inet sipct {{\n  chain forward {{ {chain}\n    ct state new counter\n  }}\n}}\n"
        )
    ports = ", ".join(str(int(p)) for p in sip_ports)
    return (
        "table inet sipct {\n"
        f'  ct helper sip-udp {{ type "{helper_type}" protocol udp; l3proto inet; }}\n'
        f'  ct helper sip-tcp {{ type "{helper_type}" protocol tcp; l3proto inet; }}\n'
        f"  chain forward {{ {chain}\n"
        f'    udp dport {{ {ports} }} ct helper set "sip-udp"\n'
        f'    tcp dport {{ {ports} }} ct helper set "sip-tcp"\n'
        "  }\n"
        "}\n"
    )


NAT_TABLE = "sipct_nat"


def render_nat_ruleset(nat: NatTopology) -> str:
    """The router's nat chains (sipct.spec.natmap): destination NAT at
    prerouting, source NAT at postrouting, first match wins. The table is
    replaced as a whole ("table ...; delete table ...": nft creates it if
    missing, so the delete never fails)."""
    out = [f"table inet {NAT_TABLE} {{}}", f"delete table inet {NAT_TABLE}"]
    if not nat:
        return "\n".join(out) + "\n"
    pre, post = [], []
    for d in nat.dnat:
        fam = "ip" if d.addr.version == 4 else "ip6"
        to = f"{d.to}:{d.to_port}" if d.to.version == 4 else f"[{d.to}]:{d.to_port}"
        post_l4 = _l4(d.proto)
        pre.append(f"{fam} daddr {d.addr} {post_l4} th dport {d.port} dnat {fam} to {to}")
    for r in nat.snat:
        fam = "ip" if r.inside.version == 4 else "ip6"
        match = f"{fam} saddr {r.host if r.host is not None else r.inside} {fam} daddr != {r.inside}"
        if r.sport is not None or r.proto is not None or r.port is not None:
            match += f" {_l4(r.proto)}"
        if r.sport is not None:
            match += f" th sport {r.sport}"
        if r.to is None:
            post.append(f"{match} masquerade")
        else:
            to = str(r.to) if r.port is None else (f"{r.to}:{r.port}" if r.to.version == 4 else f"[{r.to}]:{r.port}")
            post.append(f"{match} snat {fam} to {to}")
    out.append(f"table inet {NAT_TABLE} {{")
    out.append("  chain pre { type nat hook prerouting priority dstnat; policy accept;")
    out.extend(f"    {line}" for line in pre)
    out.append("  }")
    out.append("  chain post { type nat hook postrouting priority srcnat; policy accept;")
    out.extend(f"    {line}" for line in post)
    out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _l4(proto: int | None) -> str:
    return {6: "meta l4proto tcp", 17: "meta l4proto udp"}.get(proto or 0, "meta l4proto { tcp, udp }")


def _write_sysctls(netns_fd: int, values: dict[str, str]) -> None:
    # /proc/sys/net resolves against the opening thread's namespace
    # (net_ctl_header_lookup uses current->nsproxy->net_ns).
    with in_netns(netns_fd):
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            if key.startswith("net.bridge.") and not os.path.exists(path):
                continue  # no br_netfilter: nothing to switch off
            with open(path, "w") as f:
                f.write(value)


# IPv6 duplicate address detection would keep new addresses tentative (and
# unusable) for a second or so; router advertisements and redirects must not
# rewrite the static routes.  Set on "default" before any device exists, so
# the devices inherit it, and on "all" for the ones that already do (lo).
_COMMON_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
}
_HOST_SYSCTLS = {
    **_COMMON_SYSCTLS,
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.default.accept_redirects": "0",
}
# With a slow helper (tcp_rto_min): no tail loss probe either - it resends the
# last segment after two smoothed RTTs (tcp_schedule_loss_probe()), however
# high the RTO, and the helper would process the copy again.
_SLOW_HELPER_SYSCTLS = {"net.ipv4.tcp_early_retrans": "0"}
_ROUTER_SYSCTLS = {
    **_COMMON_SYSCTLS,
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.default.forwarding": "1",
    # A router forwarding back out of the bridge it came in on would send
    # ICMP redirects (IN_DEV_TX_REDIRECTS is all || dev).
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    # Per-namespace since 5.3; default 1 with br_netfilter built in.
    "net.bridge.bridge-nf-call-iptables": "0",
    "net.bridge.bridge-nf-call-ip6tables": "0",
    "net.bridge.bridge-nf-call-arptables": "0",
}


# -- the lab -----------------------------------------------------------------

_RTAX_RTO_MIN = 13  # include/uapi/linux/rtnetlink.h


class Lab:
    """Hosts and a router in fresh network namespaces, the SIP helper on the router.

    Use as a context manager (or call close()).  Every namespace is deleted
    on close, on an exception during setup and at interpreter exit; SIGTERM,
    SIGINT and SIGHUP raise sipct.netlink.interrupts.Interrupted, so that
    the ``with`` block closes the lab on the way out.
    """

    def __init__(
        self,
        hosts: Sequence[HostSpec],
        *,
        sip_ports: Sequence[int] = (5060,),
        helper: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        helper_type: str = "sip",
        tcp_rto_min: float | None = None,
    ) -> None:
        self.hosts: dict[str, HostSpec] = {h.name: h for h in hosts}
        self.segments = plan_segments(hosts)
        if not sip_ports or not all(0 < int(p) < 65536 for p in sip_ports):
            raise ValueError(f"bad SIP ports {sip_ports!r}")
        self.sip_ports = tuple(int(p) for p in sip_ports)
        self.helper = helper
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,15}", helper_type):
            raise ValueError(f"bad helper name {helper_type!r} (1-15 letters, digits, - or _)")
        self.helper_type = helper_type
        self.tcp_rto_min = tcp_rto_min
        self.nat = NatTopology()  # the nat chains loaded (set_nat)
        self.token = secrets.token_hex(4)
        self.prefix = prefix = lab_prefix(self.token)  # sipct-<pid>-<start>-<token>
        self.router_netns = f"{prefix}-{_ROUTER_ROLE}"
        self.host_netns: dict[str, str] = {name: f"{prefix}-{name}" for name in self.hosts}
        self._closed = False
        self._fds: dict[str, int] = {}  # namespace name -> open fd
        self._host_fds: dict[str, int] = {}  # host name -> open fd
        self._ct: NFCTSocket | None = None
        self._driver = SocketDriver(self._host_fds, self.address, default_timeout=timeout)
        try:
            # Shielded: a signal waits the fraction of a second the build
            # takes.  pyroute2 runs its requests in an asyncio loop, and a
            # coroutine that an exception left half-way complains when it is
            # collected ("Event loop is closed"); a whole lab is also simpler
            # to tear down than a half-made one.
            with doing(lambda: f"building the lab {prefix} ({', '.join(self.hosts)})"), shielded():
                self._build()
        except BaseException:
            self.close()
            raise

    # -- public API -------------------------------------------------------

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of this lab, router first."""
        return (self.router_netns, *self.host_netns.values())

    def address(self, host: str, family: int = 4) -> IPAddress:
        """The host's first address of IP version `family`."""
        try:
            spec = self.hosts[host]
        except KeyError:
            raise KeyError(f"no host {host!r} in this lab") from None
        return spec.address(family)

    def udp_send(
        self,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        payload: bytes,
        *,
        family: Family = 4,
        timeout: float | None = None,
        to: tuple[IPAddress, int] | None = None,
        receive_port: int | None = None,
    ) -> Delivery:
        """One datagram from (src, sport) to (dst, dport) across the router;
        ``to``: the address and port it is sent to when that is not dst's
        (NAT), ``receive_port``: where dst waits for it, if not at dport."""
        self._check_open()
        return self._driver.udp_send(
            src, sport, dst, dport, payload, family=family, timeout=timeout, to=to, receive_port=receive_port
        )

    def tcp_connect(
        self,
        client: str,
        cport: int,
        server: str,
        sport: int,
        family: Family = 4,
        *,
        timeout: float | None = None,
        to: tuple[IPAddress, int] | None = None,
    ) -> TcpConnection:
        """An established TCP connection from (client, cport) to (server, sport),
        dialled at ``to`` when NAT puts the server there."""
        self._check_open()
        return self._driver.tcp_connect(client, cport, server, sport, family, timeout=timeout, to=to)

    def set_nat(self, nat: NatTopology) -> None:
        """Load the router's nat chains for ``nat`` (none when empty), in a table of
        their own so the helper's table stays; a no-op when they are loaded already."""
        self._check_open()
        if nat == self.nat:
            return
        self._nft(render_nat_ruleset(nat), "nat ruleset")
        self.nat = nat

    def sweep_stragglers(self) -> int:
        """How many datagrams so far arrived after their delivery check gave up
        (after draining every host socket now)."""
        return self._driver.sweep_stragglers()

    def reset(self) -> None:
        """Make the lab as good as new for the next dialog.

        Closes the open TCP connections (first, so their FIN/ACKs do not
        leave fresh entries behind), drops unread datagrams, then flushes
        the router's conntrack table.  Expectations need no flush of their
        own: deleting a conntrack removes the expectations it is master of
        (nf_ct_delete -> nf_ct_remove_expectations).
        """
        self._check_open()
        self._driver.reset()
        self.flush_conntrack()

    def flush_conntrack(self) -> None:
        """Delete every conntrack entry (and so every expectation) in the router."""
        self._check_open()
        # pyroute2 opens one netlink socket per thread, lazily, in whatever
        # namespace the thread is in at that moment: so every use happens
        # inside the router namespace, and a first use from a new thread
        # still lands there (and never flushes the host's own table).
        assert self._ct is not None
        with shielded(), in_netns(self._fds[self.router_netns]):  # pyroute2: see __init__
            # nfgenmsg version 0 with AF_INET flushes every family:
            # ctnetlink kept that meaning when flush learnt a family filter
            # (Linux 5.3), so that `conntrack -F` kept working.
            self._ct.flush()

    def close(self) -> None:
        """Close every socket and delete every namespace; idempotent.  A
        signal meanwhile is raised once all is gone (interrupts.shielded)."""
        if self._closed:
            return
        with shielded(), doing(lambda: f"removing the lab {self.prefix}"):
            self._close()

    def _close(self) -> None:
        self._closed = True
        errors: list[BaseException] = []
        for step in (self._driver.close, self._close_ct):
            try:
                step()
            except Exception as exc:  # keep going: the namespaces must go
                errors.append(exc)
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._host_fds.clear()
        for name in self.namespaces:
            try:
                destroy_tracked_netns(name)
            except OSError as exc:
                errors.append(exc)
        if errors:
            raise LabError(f"lab cleanup incomplete: {errors!r}")

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Lab {self.token} {sorted(self.hosts)} helper={self.helper} {state}>"

    # -- setup -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the lab is closed")

    def _close_ct(self) -> None:
        if self._ct is not None:
            self._ct.close()
            self._ct = None

    def _build(self) -> None:
        for name in self.namespaces:
            create_tracked_netns(name)
            self._fds[name] = open_netns(name)
        for host, name in self.host_netns.items():
            self._host_fds[host] = self._fds[name]
        for name, fd in self._fds.items():
            _write_sysctls(fd, _ROUTER_SYSCTLS if name == self.router_netns else
                           {**_HOST_SYSCTLS, **(_SLOW_HELPER_SYSCTLS if self.tcp_rto_min is not None else {})})
        self._build_links()
        self._load_ruleset()
        with in_netns(self._fds[self.router_netns]):
            self._ct = NFCTSocket()
            self._ct.count()  # makes this thread's socket now, in here

    def _rtnl(self, netns_name: str) -> IPRoute:
        """An rtnetlink socket in a lab namespace, made without a fork."""
        with in_netns(self._fds[netns_name]):
            ipr = IPRoute()
            ipr.link_lookup(ifname="lo")  # makes the socket now, in here
        return ipr

    def _build_links(self) -> None:
        index = {name: i for i, name in enumerate(self.hosts)}
        with self._rtnl(self.router_netns) as router:
            _link_up(router, "lo")
            for segment in self.segments:
                router.link(
                    "add",
                    ifname=segment.bridge,
                    kind="bridge",
                    # Snooping would start filtering the solicited-node
                    # multicast NDP depends on once a querier shows up.
                    br_mcast_snooping=0,
                )
                bridge = _ifindex(router, segment.bridge)
                for subnet in segment.subnets:
                    _add_address(router, bridge, router_address(subnet), subnet.prefixlen)
                for host in segment.hosts:
                    port = f"v{index[host]}"
                    # Created here with its peer placed straight into the
                    # host namespace: no device ever exists outside the lab.
                    router.link(
                        "add",
                        ifname=port,
                        kind="veth",
                        peer={"ifname": "eth0", "net_ns_fd": self.host_netns[host]},
                    )
                    router.link("set", index=_ifindex(router, port), master=bridge, state="up")
                router.link("set", index=bridge, state="up")
            macs = {}
            for segment in self.segments:
                for host in segment.hosts:
                    macs[host] = self._build_host(host)
                # The bridge's MAC is its lowest port MAC, final only now.
                bridge = _ifindex(router, segment.bridge)
                bridge_mac = router.link("get", index=bridge)[0].get("IFLA_ADDRESS")
                for host in segment.hosts:
                    for addr in self.hosts[host].addresses:
                        _add_neighbour(router, bridge, addr, macs[host])
                    self._host_neighbours(host, segment, bridge_mac, macs)

    def _build_host(self, host: str) -> str:
        """Address eth0, route everything via the router; returns eth0's MAC."""
        spec = self.hosts[host]
        with self._rtnl(self.host_netns[host]) as ipr:
            _link_up(ipr, "lo")
            eth0 = _ifindex(ipr, "eth0")
            for addr in spec.addresses:
                _add_address(ipr, eth0, addr, network_of(addr).prefixlen)
            ipr.link("set", index=eth0, state="up")
            for family in (4, 6):
                try:
                    gateway = router_address(network_of(spec.address(family)))
                except LookupError:
                    continue
                extra = {}
                if self.tcp_rto_min is not None:
                    # A slow helper (a userspace one under TCG) holds segments and their ACKs
                    # in its queue: past the RTO TCP retransmits, and the helper processes
                    # the segment again. tcp_rto_min() takes a route's RTAX_RTO_MIN only
                    # when it is locked (what `ip route ... rto_min` does).
                    extra["metrics"] = {"RTAX_LOCK": 1 << _RTAX_RTO_MIN,
                                        "RTAX_RTO_MIN": int(self.tcp_rto_min * 1000)}
                ipr.route(
                    "add",
                    dst="0.0.0.0/0" if family == 4 else "::/0",
                    gateway=str(gateway),
                    oif=eth0,
                    **extra,
                )
            return ipr.link("get", index=eth0)[0].get("IFLA_ADDRESS")

    def _host_neighbours(
        self, host: str, segment: Segment, bridge_mac: str, macs: dict[str, str]
    ) -> None:
        """Permanent neighbour entries, so no packet ever waits for ARP/NDP.

        Static entries instead of a warm-up exchange: no warm-up traffic
        leaves conntrack entries in the router, and a permanent entry never
        goes STALE/PROBE (which a dynamic one does after ~30 s).
        """
        own = {network_of(a) for a in self.hosts[host].addresses}
        with self._rtnl(self.host_netns[host]) as ipr:
            eth0 = _ifindex(ipr, "eth0")
            for subnet in own:
                _add_neighbour(ipr, eth0, router_address(subnet), bridge_mac)
            for peer in segment.hosts:
                if peer == host:
                    continue
                for addr in self.hosts[peer].addresses:
                    if network_of(addr) in own:
                        _add_neighbour(ipr, eth0, addr, macs[peer])

    def _load_ruleset(self) -> None:
        self._nft(render_ruleset(self.sip_ports, self.helper, self.helper_type), "router ruleset")

    def _nft(self, ruleset: str, what: str) -> None:
        try:
            proc = subprocess.run(
                ["ip", "netns", "exec", self.router_netns, "nft", "-f", "-"],
                input=ruleset,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except FileNotFoundError as exc:
            raise LabError(f"{exc.filename} not found (see sipct.harness.prereq)") from exc
        if proc.returncode != 0:
            raise LabError(
                f"nft rejected the {what} in {self.router_netns}: "
                f"{proc.stderr.strip()} (run sipct.harness.prereq.check_prerequisites(); NAT needs "
                f"CONFIG_NFT_NAT and CONFIG_NF_NAT_SIP)"
            )


def _ifindex(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"interface {ifname} missing")
    return found[0]


def _link_up(ipr: IPRoute, ifname: str) -> None:
    ipr.link("set", index=_ifindex(ipr, ifname), state="up")


def _add_address(ipr: IPRoute, ifindex: int, addr: IPAddress, prefixlen: int) -> None:
    # IFA_F_NODAD on top of accept_dad=0: belt and braces, the address is
    # usable the moment the call returns.
    ipr.addr(
        "add",
        index=ifindex,
        address=str(addr),
        prefixlen=prefixlen,
        flags=IFA_F_NODAD if addr.version == 6 else 0,
    )


def _add_neighbour(ipr: IPRoute, ifindex: int, addr: IPAddress, mac: str) -> None:
    ipr.neigh("add", dst=str(addr), lladdr=mac, ifindex=ifindex, state=NUD_PERMANENT)
