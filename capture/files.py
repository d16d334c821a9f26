"""Reading pcap and pcapng files frame by frame.

The framing is read here rather than with dpkt's readers: they stop silently
at a record cut short and keep only the first interface of a pcapng file,
while a bug report needs the frame number where the file goes wrong and each
frame's interface and direction (a capture on a router sees a forwarded
packet twice). dpkt decodes what is inside the frames (sipct.capture.packets).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sipct.spec.dialog import DialogError

PCAP_MAGICS = {  # the magic as read little-endian: (byte order, nanosecond timestamps)
    0xA1B2C3D4: ("<", False), 0xD4C3B2A1: (">", False),
    0xA1B23C4D: ("<", True), 0x4D3CB2A1: (">", True),
}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER = 0x1A2B3C4D
# pcapng block types and options (draft-ietf-opsawg-pcapng)
BT_IDB, BT_PB, BT_SPB, BT_EPB = 1, 2, 3, 6
OPT_END, OPT_COMMENT = 0, 1
OPT_IF_NAME, OPT_IF_TSRESOL, OPT_IF_TSOFFSET = 2, 9, 14
OPT_EPB_FLAGS = 2
DIRECTIONS = {1: "in", 2: "out"}  # epb_flags bits 0-1


class CaptureError(DialogError):
    """A capture that cannot be read: the file, the frame, what is wrong."""

    def __init__(self, source: str, frame: int | None, message: str) -> None:
        self.frame = frame
        super().__init__(source, None, f"frame {frame}: {message}" if frame else message)


@dataclass(frozen=True, slots=True)
class Frame:
    number: int  # 1-based, as Wireshark numbers them
    time: float  # seconds since the epoch
    linktype: int
    data: bytes
    orig_len: int  # the length on the wire (more than len(data) when the snaplen cut it)
    interface: int = 0
    interface_name: str | None = None
    direction: str | None = None  # "in", "out" or unknown


def capture_format(path: Path) -> str | None:
    """'pcap' or 'pcapng' by the file's magic number, None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if len(head) < 4:
        return None
    if struct.unpack("<I", head)[0] in PCAP_MAGICS:
        return "pcap"
    if struct.unpack("<I", head)[0] == PCAPNG_SHB:
        return "pcapng"
    return None


def read_frames(path: Path) -> Iterator[Frame]:
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CaptureError(source, None, f"cannot read: {exc.strerror}") from None
    kind = capture_format(path)
    if kind == "pcap":
        yield from _pcap(source, data)
    elif kind == "pcapng":
        yield from _pcapng(source, data)
    else:
        raise CaptureError(source, None, "not a pcap or pcapng capture (unknown magic number)")


def _pcap(source: str, data: bytes) -> Iterator[Frame]:
    if len(data) < 24:
        raise CaptureError(source, None, f"the pcap file header is cut short ({len(data)} of 24 bytes)")
    order, nanos = PCAP_MAGICS[struct.unpack("<I", data[:4])[0]]
    _, major, minor, _, _, snaplen, linktype = struct.unpack(order + "IHHiIII", data[:24])
    if major != 2:
        raise CaptureError(source, None, f"pcap version {major}.{minor} is not 2.4")
    linktype &= 0xFFFF  # the upper bits hold the FCS length
    divisor = 1e9 if nanos else 1e6
    offset, number = 24, 0
    while offset < len(data):
        number += 1
        if len(data) - offset < 16:
            raise CaptureError(source, number, f"the record header is cut short ({len(data) - offset} of 16 "
                                               f"bytes): the file is truncated")
        sec, frac, caplen, orig_len = struct.unpack(order + "IIII", data[offset:offset + 16])
        offset += 16
        if caplen > max(snaplen, 262144):
            raise CaptureError(source, number, f"record length {caplen} is larger than the snaplen {snaplen}: "
                                               f"the file is corrupt")
        if len(data) - offset < caplen:
            raise CaptureError(source, number, f"the packet data is cut short ({len(data) - offset} of {caplen} "
                                               f"bytes): the file is truncated")
        yield Frame(number, sec + frac / divisor, linktype, data[offset:offset + caplen], orig_len)
        offset += caplen


@dataclass
class _Interface:
    linktype: int
    name: str | None
    divisor: float
    offset: int


def _pcapng(source: str, data: bytes) -> Iterator[Frame]:
    offset, number = 0, 0
    order = "<"
    interfaces: list[_Interface] = []
    while offset < len(data):
        if len(data) - offset < 12:
            raise CaptureError(source, number + 1 if interfaces else None,
                               f"a block header is cut short at byte {offset}: the file is truncated")
        block_type = struct.unpack(order + "I", data[offset:offset + 4])[0]
        if block_type == PCAPNG_SHB:
            bom = data[offset + 8:offset + 12]
            if struct.unpack("<I", bom)[0] == PCAPNG_BYTE_ORDER:
                order = "<"
            elif struct.unpack(">I", bom)[0] == PCAPNG_BYTE_ORDER:
                order = ">"
            else:
                raise CaptureError(source, None, f"section header at byte {offset} has no byte-order magic")
            interfaces = []  # a new section numbers its interfaces anew
        length = struct.unpack(order + "I", data[offset + 4:offset + 8])[0]
        frame = number + 1 if block_type in (BT_EPB, BT_SPB, BT_PB) else None
        if length < 12 or length % 4:
            raise CaptureError(source, frame, f"block at byte {offset} has a bad length {length}: "
                                              f"the file is corrupt")
        if len(data) - offset < length:
            raise CaptureError(source, frame, f"the block at byte {offset} is cut short ({len(data) - offset} of "
                                              f"{length} bytes): the file is truncated")
        if struct.unpack(order + "I", data[offset + length - 4:offset + length])[0] != length:
            raise CaptureError(source, frame, f"the block at byte {offset} ends with another length than it "
                                              f"starts with: the file is corrupt")
        body = data[offset + 8:offset + length - 4]
        offset += length
        if block_type == BT_IDB:
            interfaces.append(_idb(source, order, body))
            continue
        if block_type not in (BT_EPB, BT_SPB, BT_PB):
            continue  # name resolution, statistics, custom blocks
        number += 1
        yield _packet(source, order, number, block_type, body, interfaces)


def _options(source: str, order: str, buf: bytes, frame: int | None) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at + 4 <= len(buf):
        code, size = struct.unpack(order + "HH", buf[at:at + 4])
        if code == OPT_END:
            return
        if at + 4 + size > len(buf):
            raise CaptureError(source, frame, "an option runs past the end of its block: the file is corrupt")
        yield code, buf[at + 4:at + 4 + size]
        at += 4 + (size + 3) // 4 * 4


def _idb(source: str, order: str, body: bytes) -> _Interface:
    if len(body) < 8:
        raise CaptureError(source, None, "an interface description block is cut short")
    linktype, _, _ = struct.unpack(order + "HHI", body[:8])
    name, divisor, tsoffset = None, 1e6, 0
    for code, value in _options(source, order, body[8:], None):
        if code == OPT_IF_NAME:
            name = value.decode("utf-8", "replace").rstrip("\0")
        elif code == OPT_IF_TSRESOL and value:
            divisor = float((2 if value[0] & 0x80 else 10) ** (value[0] & 0x7F))
        elif code == OPT_IF_TSOFFSET and len(value) == 8:
            tsoffset = struct.unpack(order + "q", value)[0]
    return _Interface(linktype, name, divisor, tsoffset)


def _packet(source: str, order: str, number: int, block_type: int, body: bytes,
            interfaces: list[_Interface]) -> Frame:
    direction = None
    if block_type == BT_SPB:
        if not interfaces:
            raise CaptureError(source, number, "a packet before any interface description block")
        iface_id, ts = 0, 0
        orig_len = struct.unpack(order + "I", body[:4])[0]
        packet = body[4:4 + orig_len]
    else:
        if block_type == BT_EPB:
            if len(body) < 20:
                raise CaptureError(source, number, "an enhanced packet block is cut short")
            iface_id, high, low, caplen, orig_len = struct.unpack(order + "IIIII", body[:20])
        else:
            if len(body) < 20:
                raise CaptureError(source, number, "a packet block is cut short")
            iface_id, _, high, low, caplen, orig_len = struct.unpack(order + "HHIIII", body[:20])
        ts = high << 32 | low
        if caplen > len(body) - 20:
            raise CaptureError(source, number, f"the packet data ({caplen} bytes) runs past the end of its block: "
                                               f"the file is corrupt")
        packet = body[20:20 + caplen]
        for code, value in _options(source, order, body[20 + (caplen + 3) // 4 * 4:], number):
            if code == OPT_EPB_FLAGS and block_type == BT_EPB and len(value) == 4:
                direction = DIRECTIONS.get(struct.unpack(order + "I", value)[0] & 3)
    if iface_id >= len(interfaces):
        raise CaptureError(source, number, f"the packet names interface {iface_id}, but the section describes "
                                           f"{len(interfaces)}")
    iface = interfaces[iface_id]
    return Frame(number, iface.offset + ts / iface.divisor, iface.linktype, packet, orig_len, iface_id, iface.name,
                 direction)
