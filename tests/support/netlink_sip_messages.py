"""The SIP datagrams the kernel tests send: just enough for nf_conntrack_sip
to create its expectations (process_register_request(), process_sdp())."""

from __future__ import annotations


def host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def register(ua: str, registrar: str) -> bytes:
    return (
        f"REGISTER sip:{host(registrar)} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host(ua)}:5060;branch=z9hG4bK1\r\n"
        f"From: <sip:a@{host(registrar)}>;tag=1\r\n"
        f"To: <sip:a@{host(registrar)}>\r\n"
        f"Call-ID: 1@{ua}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:a@{host(ua)}:5060>\r\n"
        "Expires: 600\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


def invite(caller: str, callee: str, media_port: int) -> bytes:
    body = (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {caller}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {caller}\r\n"
        "t=0 0\r\n"
        f"m=audio {media_port} RTP/AVP 0\r\n"
    )
    return (
        f"INVITE sip:b@{callee} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {caller}:5060;branch=z9hG4bK2\r\n"
        f"From: <sip:a@{caller}>;tag=2\r\n"
        f"To: <sip:b@{callee}>\r\n"
        f"Call-ID: 2@{caller}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:a@{caller}:5060>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n" + body
    ).encode()
