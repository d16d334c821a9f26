"""Messages shared by the benchmarks: a four-message UDP call (INVITE with SDP, 200 with SDP, ACK, BYE)."""

from __future__ import annotations

from sipct.spec.dialog import Dialog, parse_dialog

CALL = """
name: bench-call
hosts: {ua: 192.0.2.2, server: 198.51.100.2}
steps:
  - send: ua:5060 -> server:5060
    message: |
      INVITE sip:bob@{server.uri} SIP/2.0
      Via: SIP/2.0/UDP {ua.uri}:5060;branch=z9hG4bK776asdhds
      To: Bob <sip:bob@{server.uri}>
      From: Alice <sip:alice@{ua.uri}>;tag=1928301774
      Call-ID: a84b4c76e66710@{ua}
      CSeq: 1 INVITE
      Contact: <sip:alice@{ua.uri}:5060>
      Content-Type: application/sdp
      Content-Length: {body_length}

      v=0
      o=alice 2890844526 2890844526 IN IP4 {ua}
      s=-
      c=IN IP4 {ua}
      t=0 0
      m=audio 49170 RTP/AVP 0
  - send: server:5060 -> ua:5060
    message: |
      SIP/2.0 200 OK
      Via: SIP/2.0/UDP {ua.uri}:5060;branch=z9hG4bK776asdhds
      To: Bob <sip:bob@{server.uri}>;tag=a6c85cf
      From: Alice <sip:alice@{ua.uri}>;tag=1928301774
      Call-ID: a84b4c76e66710@{ua}
      CSeq: 1 INVITE
      Content-Type: application/sdp
      Content-Length: {body_length}

      v=0
      o=bob 2808844564 2808844564 IN IP4 {server}
      s=-
      c=IN IP4 {server}
      t=0 0
      m=audio 3456 RTP/AVP 0
  - send: ua:5060 -> server:5060
    message: |+
      ACK sip:bob@{server.uri} SIP/2.0
      Via: SIP/2.0/UDP {ua.uri}:5060;branch=z9hG4bKnashds9
      To: Bob <sip:bob@{server.uri}>;tag=a6c85cf
      From: Alice <sip:alice@{ua.uri}>;tag=1928301774
      Call-ID: a84b4c76e66710@{ua}
      CSeq: 1 ACK
      Content-Length: 0

  - send: ua:5060 -> server:5060
    message: |+
      BYE sip:bob@{server.uri} SIP/2.0
      Via: SIP/2.0/UDP {ua.uri}:5060;branch=z9hG4bKnashds10
      To: Bob <sip:bob@{server.uri}>;tag=a6c85cf
      From: Alice <sip:alice@{ua.uri}>;tag=1928301774
      Call-ID: a84b4c76e66710@{ua}
      CSeq: 2 BYE
      Content-Length: 0

"""


def call_dialog() -> Dialog:
    return parse_dialog(CALL, "bench-call")
