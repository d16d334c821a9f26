"""A master: the SIP signalling conntrack and its helper data."""

from __future__ import annotations

from dataclasses import dataclass, field

from .expectation import ConnTuple
from .machines import MEDIA, REGISTRAR, Runtime


@dataclass(eq=False, slots=True)
class Master:
    """``struct nf_conn`` of a signalling connection plus ``struct nf_ct_sip_master``.

    ``original`` is the tuple of the first packet (IP_CT_DIR_ORIGINAL); the
    reply direction is its inverse - the lab has no NAT, so the kernel's reply
    tuple is exactly that. Masters compare by identity, as conntracks do.
    """

    original: ConnTuple
    created: float
    timeout_at: float
    expected: bool = False  # IPS_EXPECTED: created from an expectation
    register_cseq: int = 0
    invite_cseq: int = 0
    forced_dport: int = 0
    registrar: Runtime = field(default_factory=lambda: Runtime(REGISTRAR))
    media: Runtime = field(default_factory=lambda: Runtime(MEDIA))
    # Asked for on every message: worked out once.
    _reply: ConnTuple = field(init=False, repr=False)
    _family: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._reply = self.original.reply()
        self._family = self.original.family

    @property
    def family(self) -> int:
        return self._family

    @property
    def proto(self) -> int:
        return self.original.proto

    @property
    def helper_key(self) -> tuple[int, int]:
        """The nf_conntrack_helper the master uses: "sip" is registered once per
        (family, protocol); `exp->helper != nfct_help(ct)->helper` compares these."""
        return (self.family, self.proto)

    def tuple_for(self, reply: bool) -> ConnTuple:
        """ct->tuplehash[dir].tuple"""
        return self._reply if reply else self.original

    def __repr__(self) -> str:
        return f"<Master {self.original}>"
