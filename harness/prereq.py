"""Can this machine run the lab?  One cheap probe, one clear message.

The probe builds nothing but a throw-away namespace (always deleted) and
asks, inside it, for exactly what the lab will need: veth and bridge links,
an nftables ct helper object of type "sip", and a ctnetlink answer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

from pyroute2 import IPRoute, NFCTSocket
from sipct.netlink.interrupts import doing, shielded
from sipct.netlink.netns import in_netns, open_netns
from sipct.harness.labns import create_tracked_netns, destroy_tracked_netns, lab_prefix

__all__ = ["PrerequisiteError", "check_prerequisites"]


class PrerequisiteError(RuntimeError):
    """The lab cannot run here; `missing` names what (root, ip, nft, netns,
    links, sip-helper, ctnetlink), the message says how to fix it."""

    def __init__(self, missing: str, message: str) -> None:
        super().__init__(message)
        self.missing = missing


_SIP_HELPER_PROBE = """\
table inet sipct_probe {
  ct helper sip-udp { type "sip" protocol udp; l3proto inet; }
}
"""


def check_prerequisites() -> None:
    """Raise PrerequisiteError for the first thing the lab lacks."""
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "root",
            "the netns lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN to create "
            "network namespaces): run the tests as root, e.g. with sudo",
        )
    if shutil.which("ip") is None:
        raise PrerequisiteError("ip", "`ip` (iproute2) is not installed: apt-get install iproute2")
    if shutil.which("nft") is None:
        raise PrerequisiteError("nft", "`nft` is not installed: apt-get install nftables")
    if not os.path.exists("/proc/self/ns/net"):
        raise PrerequisiteError(
            "netns", "the kernel has no network namespaces: it needs CONFIG_NET_NS=y"
        )
    # Shielded for the reason Lab.__init__ gives: a signal waits for the probe's end.
    with doing("checking the prerequisites (a probe namespace)"), shielded():
        _probe()


def _probe() -> None:
    """Make a namespace, a veth pair, a SIP helper object and a ctnetlink socket in it."""
    name = f"{lab_prefix(secrets.token_hex(4))}-probe"
    try:
        create_tracked_netns(name)
    except OSError as exc:
        _remove_quietly(name)  # the mount point may exist already
        raise PrerequisiteError(
            "netns",
            f"cannot create a network namespace ({exc}): the kernel needs CONFIG_NET_NS=y "
            "and this process CAP_SYS_ADMIN (in a container: --privileged)",
        ) from exc
    try:
        fd = open_netns(name)
        try:
            _probe_links(fd)
            _probe_sip_helper(name)
            _probe_ctnetlink(fd)
        finally:
            os.close(fd)
    finally:
        destroy_tracked_netns(name)


def _remove_quietly(name: str) -> None:
    try:
        destroy_tracked_netns(name)
    except OSError:
        pass


def _probe_links(netns_fd: int) -> None:
    with in_netns(netns_fd):
        ipr = IPRoute()  # its socket is made here, in the probe namespace
    with ipr:
        for kind, config, extra in (
            ("veth", "CONFIG_VETH", {"peer": "probe1"}),
            ("bridge", "CONFIG_BRIDGE", {}),
        ):
            try:
                ipr.link("add", ifname=f"{kind[:2]}probe", kind=kind, **extra)
            except Exception as exc:
                raise PrerequisiteError(
                    "links",
                    f"cannot create a {kind} link ({exc}): the kernel needs {config} "
                    f"(or: modprobe {kind})",
                ) from exc


def _probe_sip_helper(name: str) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", name, "nft", "-f", "-"],
        input=_SIP_HELPER_PROBE,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        # nft_ct_helper_obj_init looks the helper up by name and tries
        # request_module("nfct-helper-sip") first; ENOENT means neither a
        # built-in nor a loadable nf_conntrack_sip exists.
        raise PrerequisiteError(
            "sip-helper",
            'the kernel has no SIP conntrack helper (nft refused `type "sip"`: '
            f"{_first_line(proc.stderr) or proc.returncode}): build it with "
            "CONFIG_NF_CONNTRACK_SIP=y|m and, if it is a module, `modprobe nf_conntrack_sip`",
        )


def _probe_ctnetlink(netns_fd: int) -> None:
    try:
        with in_netns(netns_fd), NFCTSocket() as ct:
            ct.count()
    except Exception as exc:
        raise PrerequisiteError(
            "ctnetlink",
            f"ctnetlink does not answer ({exc}): the kernel needs CONFIG_NF_CT_NETLINK=y|m "
            "and, if it is a module, `modprobe nf_conntrack_netlink`",
        ) from exc


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
