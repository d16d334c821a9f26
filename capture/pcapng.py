"""Writing pcapng with dpkt's blocks: one interface description per router
interface, the packets' direction (epb_flags) and a comment per packet
(opt_comment), nanosecond timestamps."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dpkt
from dpkt.pcapng import (PCAPNG_OPT_COMMENT, PCAPNG_OPT_ENDOFOPT, PCAPNG_OPT_IF_NAME, PCAPNG_OPT_IF_TSRESOL,
                         PCAPNG_OPT_SHB_USERAPPL, EnhancedPacketBlockLE, InterfaceDescriptionBlockLE,
                         PcapngOptionLE, SectionHeaderBlockLE)

OPT_EPB_FLAGS = 2
INBOUND, OUTBOUND = 1, 2


@dataclass(frozen=True, slots=True)
class Record:
    time_ns: int
    interface: int
    outgoing: bool
    frame: bytes
    comment: str | None = None


def write_pcapng(path: Path, interfaces: list[str], records: Iterable[Record], *, application: str = "sipct") -> None:
    end = PcapngOptionLE(code=PCAPNG_OPT_ENDOFOPT)
    shb = SectionHeaderBlockLE(opts=[PcapngOptionLE(code=PCAPNG_OPT_SHB_USERAPPL, data=application.encode()), end])
    idbs = [InterfaceDescriptionBlockLE(linktype=dpkt.pcap.DLT_EN10MB, snaplen=0, opts=[
        PcapngOptionLE(code=PCAPNG_OPT_IF_NAME, data=name.encode()),
        PcapngOptionLE(code=PCAPNG_OPT_IF_TSRESOL, data=b"\x09"),  # 10^-9 s
        end]) for name in interfaces]
    with open(path, "wb") as f:
        writer = dpkt.pcapng.Writer(f, shb=shb, idb=idbs)
        for r in records:
            opts = [PcapngOptionLE(code=OPT_EPB_FLAGS, data=struct.pack("<I", OUTBOUND if r.outgoing else INBOUND))]
            if r.comment:
                opts.append(PcapngOptionLE(code=PCAPNG_OPT_COMMENT, text=r.comment))
            writer.writepkt(EnhancedPacketBlockLE(iface_id=r.interface, ts_high=r.time_ns >> 32,
                                                  ts_low=r.time_ns & 0xFFFFFFFF, pkt_data=r.frame,
                                                  opts=[*opts, end]))
