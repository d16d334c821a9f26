"""The sysctls the lab writes in its namespaces, and the writer."""

from __future__ import annotations

import os

from sipct.netlink.netns import in_netns


def write_sysctls(netns_fd: int, values: dict[str, str]) -> None:
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
COMMON_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
}
HOST_SYSCTLS = {
    **COMMON_SYSCTLS,
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.default.accept_redirects": "0",
}
# With a slow helper (tcp_rto_min): no tail loss probe either - it resends the
# last segment after two smoothed RTTs (tcp_schedule_loss_probe()), however
# high the RTO, and the helper would process the copy again.
SLOW_HELPER_SYSCTLS = {"net.ipv4.tcp_early_retrans": "0"}
ROUTER_SYSCTLS = {
    **COMMON_SYSCTLS,
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
