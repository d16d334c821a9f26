"""``sipct helper --config FILE [--check]``.

Exit status: 0 stopped cleanly (or every check passed), 2 the configuration
is bad or a prerequisite is missing (the message names the key and line, or
the kernel option / module / privilege).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from sipct.spec.exitcodes import EXIT_ERROR, EXIT_OK

from .natcheck import (BUILTIN, FOLLOW_MASTER, FOLLOW_MASTER_DIFFERS, LOADED, KernelFiles, module_state, nat_chains,
                       nat_sip_fix, nat_sip_state)

CAP_NET_ADMIN = 12


def add_helper_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("helper", help="run the userspace reference SIP helper (nfnetlink_cthelper + NFQUEUE)")
    p.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="configuration file (TOML; see docs/reference.rst and reference/examples/)")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration and the kernel's prerequisites, then exit")
    p.add_argument("--netns", metavar="NAME",
                   help="serve this named network namespace (default: the one the process runs in)")
    p.set_defaults(func=cmd_helper)


def cmd_helper(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.check:
        return check(config, args.netns)
    from .daemon import run
    return run(config, args.netns)


def _has_net_admin() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def _nat_sip(config, netns: str | None, kernel: KernelFiles) -> tuple[bool, str, str]:
    """nf_nat_sip's expectfn "sip", which every NAT expectation names; needed
    when the namespace has a nat chain (an iptables-legacy nat table is not seen)."""
    state = nat_sip_state(kernel)
    if state in (LOADED, BUILTIN):
        return True, "nf_nat_sip", f"{state}: the expectfn \"sip\" for NAT expectations is registered"
    try:
        chains = nat_chains(netns)
    except OSError as exc:
        return True, "nf_nat_sip", f"not loaded; cannot tell whether this namespace NATs ({exc}): needed behind NAT"
    if not chains:
        return True, "nf_nat_sip", "not loaded, and no nft nat chain here: needed only behind NAT"
    fix = nat_sip_fix(state)
    if config.name == "sip":
        fix += ("; it loads nf_conntrack_sip, which owns the name \"sip\": set helper.name to another name "
                "(e.g. \"sipct\") and make it the type of the ct helper objects")
    return False, "nf_nat_sip", (f"not loaded, but this namespace NATs (nat chain {', '.join(chains)}): the helper's "
                                 f"NAT expectations fall back to expectfn \"{FOLLOW_MASTER}\", {FOLLOW_MASTER_DIFFERS} "
                                 f"(docs: reference-nat); {fix}")


def check(config, netns: str | None = None, kernel: KernelFiles = KernelFiles()) -> int:
    """The prerequisites, one line each; 0 when all hold. Asking the kernel
    loads nfnetlink_cthelper / nfnetlink_queue / ctnetlink on demand when
    they are modules (nfnetlink_rcv_msg() request_module()s a missing subsystem);
    nf_nat_sip is never loaded here (it brings nf_conntrack_sip, which takes
    the name "sip"). ``kernel``: where the module states are read."""
    from pyroute2.netlink.exceptions import NetlinkError

    from .netlink.socket import ExpectationSocket, HelperSocket, netlink_text, subsystem_errors

    failures = 0

    def report(ok: bool, what: str, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")

    print(f"configuration {config.path}: helper {config.name!r}, queue(s) {', '.join(map(str, config.queues))}, "
          f"fail_policy {config.fail_policy}, profile {config.kernel_profile().name}, "
          f"ports {','.join(map(str, config.params.ports))}")
    if not _has_net_admin():
        report(False, "privileges", "needs CAP_NET_ADMIN: run as root")
        return EXIT_ERROR
    report(True, "privileges", "CAP_NET_ADMIN")
    try:
        with HelperSocket(netns) as sock:
            try:
                helpers = sock.helpers()
                ours = [h for h in helpers if h.name in config.names]
                report(True, "nfnetlink_cthelper",
                       f"{len(helpers)} userspace helper(s) registered" + (f", {len(ours)} named {', '.join(map(repr, config.names))} "
                                                                          "(will be updated)" if ours else ""))
            except NetlinkError as exc:
                report(False, "nfnetlink_cthelper", netlink_text(exc))
            kernel_sip = module_state("nf_conntrack_sip", "sip_help_udp", kernel)
            if config.name == "sip" and kernel_sip in (LOADED, BUILTIN):
                report(False, "no kernel SIP helper",
                       f"nf_conntrack_sip is {kernel_sip} and owns the name \"sip\": registration would fail with "
                       "EBUSY; `modprobe -r nf_nat_sip nf_conntrack_sip` and blacklist it, or set helper.name "
                       "(behind NAT: keep both loaded and set helper.name, e.g. \"sipct\", as the ct helper "
                       "objects' type)")
            for queue_num in config.queues:
                code = sock.probe_queue(queue_num)
                if code == errno.ENODEV:
                    report(True, f"queue {queue_num}", "nfnetlink_queue with NFQA_CT, queue free")
                else:
                    meaning = subsystem_errors()["probe queue"].get(code, os.strerror(code))
                    report(False, f"queue {queue_num}", meaning)
    except OSError as exc:
        report(False, "netlink", str(exc))
    report(*_nat_sip(config, netns, kernel))
    try:
        with ExpectationSocket(netns) as ctexp:
            count = len(ctexp.dump())
        report(True, "ctnetlink", f"{count} expectation(s) in the table")
    except (OSError, NetlinkError) as exc:
        report(False, "ctnetlink", netlink_text(exc))
    print("all prerequisites hold" if not failures else f"{failures} prerequisite(s) missing")
    return EXIT_OK if not failures else EXIT_ERROR
