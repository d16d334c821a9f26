"""Kernel version profiles: the behaviour that differs between kernels.

Every difference is one named field here, documented with the kernel change that
introduced it, so the rest of the spec asks the profile instead of comparing
version numbers. The Debian 6.1 kernels took the 2026 backports of the upstream
``nf_conntrack_sip`` hardening series in steps: ``sip_parse_port()`` and
``sip_strtouint()`` by 6.1.176, ``assign_helper`` by 6.1.187, the NULL-returning
``sip_skip_whitespace()`` in 6.1.190, lazy expectation expiry in 6.1.192; 6.12.117
has the same ``nf_conntrack_sip.c`` as 6.1.192 (diff: only the ``nf_ct_refresh``
signature). The running 6.18 kernel's source is not packaged here: its profile is
established by measurement (``sipct run``) and recorded in docs/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class KernelProfile:
    name: str
    description: str
    # sip_parse_port() (Debian 6.1.176, 6.12.107): a URI port is 1-5 digits, 1024-65535, and must
    # not end at the buffer end; the same rule in epaddr_len(), the request URI
    # and header URIs. Before: epaddr_len() skipped any run of digits, and the
    # URI parsers used simple_strtoul() with a 1024-65535 check on the
    # unsigned-int-truncated value.
    strict_uri_port: bool
    # sip_strtouint() (Debian 6.1.176, 6.12.107): numbers are bounded (at most 11 characters,
    # at most UINT_MAX) and base 10 everywhere. Before: simple_strtoul(), which
    # wraps, reads past the message, and parsed `expires=` parameters with
    # base 0 (so `expires=010` meant 8 and `expires=0x10` meant 16).
    bounded_numbers: bool
    # sip_skip_whitespace() returns NULL at the buffer end (Debian 6.1.190, 6.12.111); before it
    # returned the limit itself and the caller went on to read at the limit.
    skip_whitespace_null_at_end: bool
    # process_sdp() calls hooks->sdp_session only with an address from the SDP
    # (have_rtp_addr, the fix of CVE-2026-31427); before, with whatever
    # rtp_addr held - uninitialised stack when no media had one.
    sdp_session_needs_address: bool = True
    # nf_nat_sip() before 6.1.176: no 1024-65535 check of a Via's rport=, and a
    # reply of a master with forced_dport gets its UDP header rewritten even on
    # TCP, where those bytes are the TCP ports and sequence number (the spec
    # cannot say what the peer makes of that).
    nat_rport_range: bool = True
    nat_forced_dport_udp_only: bool = True
    # nf_nat_sip() moves its Contact offset by what map_addr() changed ("coff
    # += delta", "netfilter: nf_nat_sip: rewind offset when NAT shrinks the
    # packet", posted July 2026; in Debian 6.1.192's and 6.12.117's source).
    # Before, after a rewrite that shrank the packet by 2 or more the offset
    # points past the ", " and the next URI of that Contact header is not
    # translated (measured on 6.18.44; assumed for the older 6.1 profiles,
    # whose nf_nat_sip.c predates the fix; 6.1.170's source lacks it).
    nat_contact_offset_follows: bool = False

    @classmethod
    def feature_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in ("name", "description")]


LEGACY_6_1_170 = KernelProfile(
    name="6.1.170",
    description="Debian 6.1.170 (linux-image-6.1.0-47): simple_strtoul number parsing, loose URI ports",
    strict_uri_port=False,
    bounded_numbers=False,
    skip_whitespace_null_at_end=False,
    nat_rport_range=False,
    nat_contact_offset_follows=False,
    nat_forced_dport_udp_only=False,
)

PARTIAL_6_1_176 = KernelProfile(
    name="6.1.176",
    description="Debian 6.1.176-6.1.189, 6.12.107-6.12.110: sip_parse_port() and sip_strtouint(), "
                "the old sip_skip_whitespace()",
    strict_uri_port=True,
    bounded_numbers=True,
    skip_whitespace_null_at_end=False,
)

HARDENED_6_1_192 = KernelProfile(
    name="6.1.192",
    description="Debian 6.1.190+, 6.12.111+: also sip_skip_whitespace() returning NULL at the end "
                "(6.1.192 and 6.12.115+ add lazy expectation expiry, not observable here)",
    strict_uri_port=True,
    bounded_numbers=True,
    skip_whitespace_null_at_end=True,
    nat_contact_offset_follows=True,
)

RUNNING_6_18 = KernelProfile(
    name="6.18",
    description="6.18.44 (this machine's kernel): the hardened parser, established by measurement",
    strict_uri_port=True,
    bounded_numbers=True,
    skip_whitespace_null_at_end=True,
)

PROFILES: dict[str, KernelProfile] = {
    p.name: p for p in (LEGACY_6_1_170, PARTIAL_6_1_176, HARDENED_6_1_192, RUNNING_6_18)}
DEFAULT_PROFILE = RUNNING_6_18


class UnknownProfile(LookupError):
    pass


def profile_named(name: str) -> KernelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfile(f"unknown kernel profile {name!r}; known: {', '.join(PROFILES)}") from None


def _version_tuple(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise UnknownProfile(f"cannot read a kernel version from {text!r}")
    return tuple(int(g) for g in match.groups() if g is not None)


def profile_for_kernel(release: str) -> KernelProfile:
    """The profile for a kernel version such as ``6.1.170`` or ``6.12.117``.

    The boundaries come from the packaged sources (``nf_conntrack_sip.c`` of
    Debian 6.1.170, .176, .187, .190, .192 and 6.12.107, .111, .113, .115,
    .117): sip_parse_port()/sip_strtouint() are in 6.1.176 and 6.12.107, the
    NULL-returning sip_skip_whitespace() in 6.1.190 and 6.12.111. Versions older
    than the oldest packaged ones are assumed to parse like 6.1.170.
    """
    version = _version_tuple(release)
    major_minor = version[:2]
    patch = version[2] if len(version) > 2 else 0
    if major_minor == (6, 1):
        if patch >= 190:
            return HARDENED_6_1_192
        return PARTIAL_6_1_176 if patch >= 176 else LEGACY_6_1_170
    if major_minor == (6, 12):
        if patch >= 111:
            return HARDENED_6_1_192
        return PARTIAL_6_1_176 if patch >= 107 else LEGACY_6_1_170
    if major_minor >= (6, 18):
        return RUNNING_6_18
    return LEGACY_6_1_170
