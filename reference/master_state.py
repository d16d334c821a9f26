"""What the reference helper keeps in each master conntrack's private data.

A userspace helper gets ``priv_data_len`` bytes per conntrack from the kernel
(nfnl_cthelper_to_nlattr() / _from_nlattr()), carried in CTA_HELP_INFO of
every queued packet's conntrack and written back with the verdict.
`MasterState` is this helper's layout of them - the kernel helper's
``struct nf_ct_sip_master`` - so that a restarted helper finds each master's
CSeqs again in its next queued packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["MasterState"]


@dataclass(frozen=True, slots=True)
class MasterState:
    """struct nf_ct_sip_master in the helper's private data: the CSeqs of the
    last REGISTER and INVITE and the Via port nf_nat_sip would use.

    Layout (12 bytes, network order): register_cseq u32, invite_cseq u32,
    forced_dport u16, version u8, pad u8. Version 0 is the all-zero area
    the kernel gives a new conntrack (nf_ct_helper_ext_add()): no state yet.
    """

    register_cseq: int = 0
    invite_cseq: int = 0
    forced_dport: int = 0

    LAYOUT = struct.Struct("!IIHBx")
    VERSION = 1
    SIZE = LAYOUT.size

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.register_cseq & 0xFFFFFFFF, self.invite_cseq & 0xFFFFFFFF,
                                self.forced_dport & 0xFFFF, self.VERSION)

    @classmethod
    def unpack(cls, data: bytes | None) -> MasterState | None:
        """The state in ``data``, None when there is none (absent, zeroed, or
        written by something else)."""
        if not data or len(data) < cls.SIZE:
            return None
        register, invite, dport, version = cls.LAYOUT.unpack_from(data)
        if version != cls.VERSION:
            return None
        return cls(register, invite, dport)
