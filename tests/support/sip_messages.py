"""Syntactically normal SIP messages for the lab tests (documentation addresses)."""

from __future__ import annotations

UA4, SERVER4 = "192.0.2.2", "198.51.100.2"
UA6, SERVER6 = "2001:db8:1::2", "2001:db8:2::2"


def sdp(media_port: int, family: int = 4) -> bytes:
    addr = f"IP4 {UA4}" if family == 4 else f"IP6 {UA6}"
    return (
        "v=0\r\n"
        f"o=alice 2890844526 2890844526 IN {addr}\r\n"
        "s=-\r\n"
        f"c=IN {addr}\r\n"
        "t=0 0\r\n"
        f"m=audio {media_port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def invite(
    media_port: int,
    *,
    family: int = 4,
    transport: str = "UDP",
    call_id: str = "a84b4c76e66710",
    cseq: int = 314159,
) -> bytes:
    ua, server = (UA4, SERVER4) if family == 4 else (f"[{UA6}]", f"[{SERVER6}]")
    body = sdp(media_port, family)
    head = (
        f"INVITE sip:bob@{server} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {ua}:5060;branch=z9hG4bK776asdhds{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: Bob <sip:bob@{server}>\r\n"
        f"From: Alice <sip:alice@{ua}>;tag=1928301774\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:alice@{ua}:5060;transport={transport.lower()}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def _dialog_lines(method: str, call_id: str, cseq: int) -> str:
    """To, From, Call-ID, CSeq and an empty body: what every message of the dialog carries."""
    return (f"To: Bob <sip:bob@{SERVER4}>;tag=a6c85cf\r\n"
            f"From: Alice <sip:alice@{UA4}>;tag=1928301774\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            "Content-Length: 0\r\n"
            "\r\n")


def response(
    status: str, method: str, *, call_id: str = "a84b4c76e66710", cseq: int = 314159
) -> bytes:
    return (
        f"SIP/2.0 {status}\r\n"
        f"Via: SIP/2.0/UDP {UA4}:5060;branch=z9hG4bK776asdhds{cseq}\r\n"
        + _dialog_lines(method, call_id, cseq)
    ).encode()


def request(method: str, *, call_id: str = "a84b4c76e66710", cseq: int = 314159) -> bytes:
    return (
        f"{method} sip:bob@{SERVER4} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {UA4}:5060;branch=z9hG4bK{method.lower()}{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        + _dialog_lines(method, call_id, cseq)
    ).encode()
