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

import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType

from pyroute2 import IPRoute, NFCTSocket
from sipct.harness.rtnl import LabError, add_address, add_neighbour, ifindex, link_up
from sipct.harness.ruleset import NAT_TABLE, render_nat_ruleset, render_ruleset
from sipct.harness.segments import (DOCUMENTATION_NETWORKS, DEFAULT_TIMEOUT, HostSpec, IPAddress, Segment,
                                    ROUTER_ROLE, plan_segments)
from sipct.harness.sysctls import (HOST_SYSCTLS, ROUTER_SYSCTLS, SLOW_HELPER_SYSCTLS, write_sysctls)
from sipct.spec.natmap import NatTopology
from sipct.spec.topology import network_of, router_address
from sipct.harness.drivers import Delivery, Family, SocketDriver, TcpConnection
from sipct.harness.droplog import DropLog
from sipct.netlink.nflog import NflogError
from sipct.netlink.interrupts import doing, shielded
from sipct.harness.labns import create_tracked_netns, destroy_tracked_netns, lab_namespaces, lab_prefix
from sipct.netlink.netns import in_netns, open_netns
from sipct.harness.sweep import remove_stale_namespaces

__all__ = [
    "DOCUMENTATION_NETWORKS",
    "NAT_TABLE",
    "Segment",
    "plan_segments",
    "render_nat_ruleset",
    "render_ruleset",
    "Delivery",
    "HostSpec",
    "Lab",
    "LabError",
    "TcpConnection",
    "lab_namespaces",
    "remove_stale_namespaces",
]

# -- the lab -----------------------------------------------------------------

_RTAX_RTO_MIN = 13  # include/uapi/linux/rtnetlink.h
# The hosts' minimum TCP retransmission timeout (seconds; None: the kernel's
# 200 ms) and no tail loss probe (SLOW_HELPER_SYSCTLS). The lab never needs a
# retransmission - a send whose segment the helper dropped is aborted after
# the drop time-out - but a spurious one, when an ACK comes late (a userspace
# helper holds every packet of a helped connection, ACKs included, in its
# queue; six labs share two cores), makes the helper see the segment twice:
# it re-creates the expectations, and the kernel reports a destroy and a new
# the spec did not.
TCP_RTO_MIN = 3.0
LINKS_UP_TIMEOUT = 10.0  # seconds a new lab's links may take to come up (Lab._wait_links_up)


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
        helper_type: str | Sequence[str] = "sip",
        tcp_rto_min: float | None = TCP_RTO_MIN,
    ) -> None:
        self.hosts: dict[str, HostSpec] = {h.name: h for h in hosts}
        self.segments = plan_segments(hosts)
        if not sip_ports or not all(0 < int(p) < 65536 for p in sip_ports):
            raise ValueError(f"bad SIP ports {sip_ports!r}")
        self.sip_ports = tuple(int(p) for p in sip_ports)
        self.helper = helper
        types = (helper_type,) if isinstance(helper_type, str) else tuple(helper_type)
        for name in types or ("",):
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,15}", name):
                raise ValueError(f"bad helper name {name!r} (1-15 letters, digits, - or _)")
        self.helper_types = types  # several: a worker's each (render_ruleset)
        self.tcp_rto_min = tcp_rto_min
        self.nat = NatTopology()  # the nat chains loaded (set_nat)
        self.forward = "accept"  # the forward policy loaded (set_nat)
        self.token = secrets.token_hex(4)
        self.prefix = prefix = lab_prefix(self.token)  # sipct-<pid>-<start>-<token>
        self.router_netns = f"{prefix}-{ROUTER_ROLE}"
        self.host_netns: dict[str, str] = {name: f"{prefix}-{name}" for name in self.hosts}
        self._closed = False
        self._fds: dict[str, int] = {}  # namespace name -> open fd
        self._host_fds: dict[str, int] = {}  # host name -> open fd
        self._ct: NFCTSocket | None = None
        self.drops: DropLog | None = None  # the helper's drop log (sipct.harness.droplog), when the kernel has one
        self.drops_unavailable: str | None = None  # why there is none
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

    def udp_socket(self, host: str, port: int, family: Family = 4) -> socket.socket:
        """``host``'s non-blocking UDP socket bound to ``port`` (made once,
        kept until reset()), for a caller that sends many datagrams before
        it reads any (bench/router.py)."""
        self._check_open()
        return self._driver.udp_socket(host, family, port)

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

    def set_nat(self, nat: NatTopology, forward: str = "accept") -> None:
        """Load the dialog's own table: the nat chains for ``nat`` (none when
        empty) and the forward policy, apart from the helper's table; a no-op
        when they are loaded already."""
        self._check_open()
        if (nat, forward) == (self.nat, self.forward):
            return
        self._nft(render_nat_ruleset(nat, forward, self.sip_ports), "nat ruleset")
        self.nat, self.forward = nat, forward

    def sweep_stragglers(self) -> int:
        """How many datagrams so far arrived after their delivery check gave up
        (after draining every host socket now)."""
        return self._driver.sweep_stragglers()

    @property
    def close_timeouts(self) -> int:
        """How many TCP connections so far were reset because their graceful
        close timed out although no segment was missing."""
        return self._driver.close_timeouts

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
        for step in (self._driver.close, self._close_ct, self._close_drops):
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

    def _close_drops(self) -> None:
        if self.drops is not None:
            self.drops.close()
            self._driver.drops = self.drops = None

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
            write_sysctls(fd, ROUTER_SYSCTLS if name == self.router_netns else
                           {**HOST_SYSCTLS, **(SLOW_HELPER_SYSCTLS if self.tcp_rto_min is not None else {})})
        self._build_links()
        self._load_ruleset()
        self._wait_links_up()
        with in_netns(self._fds[self.router_netns]):
            self._ct = NFCTSocket()
            self._ct.count()  # makes this thread's socket now, in here
        if self.helper:
            self._open_drops()

    def _wait_links_up(self, timeout: float = LINKS_UP_TIMEOUT) -> None:
        """Wait until every link of the lab is operationally up.

        A new veth or bridge carries traffic only once the linkwatch work
        has run for it (linkwatch_do_dev(): dev_activate() swaps the noop
        qdisc, which drops everything, for the real one, and the bridge
        port starts forwarding). linkwatch runs at most once a second
        (linkwatch_schedule_work()), so a lab built within a second of
        another lab's build or teardown can see its first datagram dropped:
        the curated dialogs' lost first packets. rfc2863_policy() sets the
        operstate in that same work item, under the RTNL lock that our dump
        takes too, so "UP" means the whole of it has run."""
        deadline = time.monotonic() + timeout
        for name in self.namespaces:
            with self._rtnl(name) as ipr:
                while True:
                    down = [link.get("IFLA_IFNAME") for link in ipr.get_links()
                            if link.get("IFLA_IFNAME") != "lo" and link.get("IFLA_OPERSTATE") != "UP"]
                    if not down:
                        break
                    if time.monotonic() > deadline:
                        raise LabError(f"links {', '.join(map(str, down))} of {name} not up within {timeout:.0f} s")
                    time.sleep(0.01)

    def _open_drops(self) -> None:
        """The router's drop log: a shortcut past the delivery time-out, so a
        kernel without nfnetlink_log only makes the lab wait as it always did."""
        try:
            self.drops = DropLog(self.router_netns)
        except NflogError as exc:
            self.drops_unavailable = str(exc)
            return
        self._driver.drops = self.drops

    def _rtnl(self, netns_name: str) -> IPRoute:
        """An rtnetlink socket in a lab namespace, made without a fork."""
        with in_netns(self._fds[netns_name]):
            ipr = IPRoute()
            ipr.link_lookup(ifname="lo")  # makes the socket now, in here
        return ipr

    def _build_links(self) -> None:
        index = {name: i for i, name in enumerate(self.hosts)}
        with self._rtnl(self.router_netns) as router:
            link_up(router, "lo")
            for segment in self.segments:
                router.link(
                    "add",
                    ifname=segment.bridge,
                    kind="bridge",
                    # Snooping would start filtering the solicited-node
                    # multicast NDP depends on once a querier shows up.
                    br_mcast_snooping=0,
                )
                bridge = ifindex(router, segment.bridge)
                for subnet in segment.subnets:
                    add_address(router, bridge, router_address(subnet), subnet.prefixlen)
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
                    router.link("set", index=ifindex(router, port), master=bridge, state="up")
                router.link("set", index=bridge, state="up")
            macs = {}
            for segment in self.segments:
                for host in segment.hosts:
                    macs[host] = self._build_host(host)
                # The bridge's MAC is its lowest port MAC, final only now.
                bridge = ifindex(router, segment.bridge)
                bridge_mac = router.link("get", index=bridge)[0].get("IFLA_ADDRESS")
                for host in segment.hosts:
                    for addr in self.hosts[host].addresses:
                        add_neighbour(router, bridge, addr, macs[host])
                    self._host_neighbours(host, segment, bridge_mac, macs)

    def _build_host(self, host: str) -> str:
        """Address eth0, route everything via the router; returns eth0's MAC."""
        spec = self.hosts[host]
        with self._rtnl(self.host_netns[host]) as ipr:
            link_up(ipr, "lo")
            eth0 = ifindex(ipr, "eth0")
            for addr in spec.addresses:
                add_address(ipr, eth0, addr, network_of(addr).prefixlen)
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
            eth0 = ifindex(ipr, "eth0")
            for subnet in own:
                add_neighbour(ipr, eth0, router_address(subnet), bridge_mac)
            for peer in segment.hosts:
                if peer == host:
                    continue
                for addr in self.hosts[peer].addresses:
                    if network_of(addr) in own:
                        add_neighbour(ipr, eth0, addr, macs[peer])

    def _load_ruleset(self) -> None:
        self._nft(render_ruleset(self.sip_ports, self.helper, self.helper_types), "router ruleset")

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
