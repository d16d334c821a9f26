"""A master: the SIP signalling conntrack and its helper data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .expectation import ConnTuple
from .machines import INVITE, NAT, REGISTRAR, Runtime

if TYPE_CHECKING:
    from .table import Entry


@dataclass(eq=False, slots=True)
class Master:
    """``struct nf_conn`` of a signalling connection plus ``struct nf_ct_sip_master``.

    ``original`` is the tuple of the first packet (IP_CT_DIR_ORIGINAL);
    ``reply`` the tuple replies carry (IP_CT_DIR_REPLY): the inverse of
    ``original`` unless NAT bound the conntrack to other addresses or ports
    (:mod:`~sipct.spec.natmap`). Masters compare by identity, as conntracks do.
    """

    original: ConnTuple
    created: float
    timeout_at: float
    expected: bool = False  # IPS_EXPECTED: created from an expectation
    # struct nf_ct_sip_master: written only by the machines' actions.
    register_cseq: int = 0
    invite_cseq: int = 0
    forced_dport: int = 0
    registrar: Runtime = field(default_factory=lambda: Runtime(REGISTRAR))
    invite: Runtime = field(default_factory=lambda: Runtime(INVITE))
    # The signalling expectation the registrar holds (pending or registered);
    # sip_exp_policy[SIP_EXPECT_SIGNALLING].max_expected is 1.
    signalling: "Entry | None" = None
    reply: ConnTuple | None = None  # None: original.reply()
    # IPS_NAT_MASK: the NatMachine's state says whether nf_nat_sip's hooks run.
    nat: Runtime = field(default_factory=lambda: Runtime(NAT))
    # Asked for on every message: worked out once (a field, not a property: reading it is no call).
    _reply: ConnTuple = field(init=False, repr=False)
    family: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._reply = self.reply if self.reply is not None else self.original.reply()
        self.reply = self._reply
        self.family = self.original.family

    @property
    def proto(self) -> int:
        return self.original.proto

    @property
    def helper_key(self) -> tuple[int, int]:
        """The nf_conntrack_helper the master uses: "sip" is registered once per
        (family, protocol); `exp->helper != nfct_help(ct)->helper` compares these."""
        return (self.family, self.proto)

    def restore(self, register_cseq: int, invite_cseq: int, forced_dport: int) -> None:
        """Take in the helper data the kernel holds (a userspace helper reads
        it back): the invite machine starts where that data says."""
        self.register_cseq, self.invite_cseq, self.forced_dport = register_cseq, invite_cseq, forced_dport
        self.invite.state = "invited" if invite_cseq else "idle"

    def tuple_for(self, reply: bool) -> ConnTuple:
        """ct->tuplehash[dir].tuple"""
        return self._reply if reply else self.original

    def __repr__(self) -> str:
        return f"<Master {self.original}>"
