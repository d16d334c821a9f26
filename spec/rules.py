"""The rule catalogue: every decision the spec can make, with the kernel
function it models.

A rule fires when the spec takes the corresponding path through the kernel
code; the trace of a packet is the list of rules that fired. The docs render
this table, the conformance suite counts which rules a run exercised, and a
verdict names the rule that decided it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    function: str  # the kernel function (net/netfilter/nf_conntrack_sip.c unless stated)
    summary: str
    drop: bool = False  # the rule drops the packet
    log: str | None = None  # the nf_ct_helper_log() text the kernel prints when it drops
    # Module parameters without which the rule cannot fire ((name, value), ...).
    needs_params: tuple[tuple[str, object], ...] = ()
    # Why a conformance run may not reach the rule (time, table size); None if it can.
    needs: str | None = None
    # Kernel profiles on which the rule can fire at all (empty: all).
    only_profiles: tuple[str, ...] = ()

    def reachable_with(self, params: object, profile: str | None = None) -> bool:
        if profile is not None and self.only_profiles and profile not in self.only_profiles:
            return False
        return all(getattr(params, name) == value for name, value in self.needs_params)


RULES: dict[str, Rule] = {}


def _rule(id: str, function: str, summary: str, *, drop: bool = False, log: str | None = None,
          needs_params: tuple[tuple[str, object], ...] = (), needs: str | None = None,
          only_profiles: tuple[str, ...] = ()) -> Rule:
    if id in RULES:
        raise ValueError(f"duplicate rule id {id}")
    rule = Rule(id, function, summary, drop, log, needs_params, needs, only_profiles)
    RULES[id] = rule
    return rule


# --- entry points: sip_help_udp() / sip_help_tcp() -------------------------------
NO_PAYLOAD = _rule("helper.no-payload", "sip_help_udp/sip_help_tcp",
                   "A packet without payload is accepted untouched and does not refresh the master.")
REFRESH_MASTER = _rule("helper.refresh-master", "sip_help_udp/sip_help_tcp -> nf_ct_refresh",
                       "Every packet with payload sets the master's timeout to sip_timeout.")
UNCONFIRMED_DROP = _rule("helper.drop-unconfirmed", "nf_conntrack_core.c: nf_conntrack_free via nf_ct_destroy",
                         "When the first packet of a connection is dropped, its unconfirmed conntrack and every "
                         "expectation it created go with it.")
TCP_NOT_ESTABLISHED = _rule("helper.tcp-not-established", "sip_help_tcp",
                            "TCP data while the conntrack is not ESTABLISHED (ctinfo IP_CT_NEW: no reply seen yet, "
                            "e.g. a connection picked up mid-stream after its conntrack died) is accepted "
                            "unprocessed.")
SHORT_PAYLOAD = _rule("helper.short", "sip_help_udp/sip_help_tcp",
                      "A payload shorter than \"SIP/2.0 200\" (11 bytes) is accepted unprocessed.")
TCP_NO_CONTENT_LENGTH = _rule("tcp.no-content-length", "sip_help_tcp",
                              "No parsable Content-Length: the rest of the segment is accepted unprocessed.")
# On 6.1.170 the header only matches with digits_len() > 0 and simple_strtoul()
# cannot fail on a digit, so only sip_strtouint()'s overflow (6.1.176+) gets here.
TCP_BAD_CONTENT_LENGTH = _rule("tcp.bad-content-length", "sip_help_tcp",
                               "Content-Length overflows sip_strtouint(): the rest is accepted unprocessed.",
                               only_profiles=("6.1.176", "6.1.192", "6.18"))
TCP_CONTENT_LENGTH_TOO_BIG = _rule("tcp.content-length-too-big", "sip_help_tcp",
                                   "Content-Length larger than the remaining segment: the rest is accepted unprocessed.")
TCP_NO_BLANK_LINE = _rule("tcp.no-blank-line", "sip_help_tcp",
                          "No CRLFCRLF after the Content-Length value: the rest is accepted unprocessed.")
TCP_PAST_SEGMENT = _rule("tcp.message-past-segment", "sip_help_tcp",
                         "A message running past the end of the segment is accepted unprocessed; "
                         "the function returns there, without the NAT seq_adjust for the messages before it.")
TCP_MESSAGE = _rule("tcp.message", "sip_help_tcp",
                    "One complete message (headers, CRLFCRLF, Content-Length bytes) is processed.")

# --- dispatch: process_sip_msg() ------------------------------------------------
REQUEST = _rule("msg.request", "process_sip_msg",
                "A message not starting with \"SIP/2.0 \" (case-insensitive) is a request.")
RESPONSE = _rule("msg.response", "process_sip_msg", "A message starting with \"SIP/2.0 \" is a response.")
VIA_FORCED_DPORT = _rule("request.via-forced-dport", "process_sip_request",
                         "A Via (UDP) address equal to the sender with another port stores forced_dport (used by NAT).")
UNHANDLED_METHOD = _rule("request.unhandled-method", "process_sip_request",
                         "A method not in sip_handlers[] (or not followed by SP and a letter) is accepted untouched.")
REQUEST_NO_CSEQ = _rule("request.no-cseq", "process_sip_request",
                        "A handled request without a parsable CSeq header is dropped.", drop=True,
                        log="cannot parse cseq")
REQUEST_BAD_CSEQ = _rule("request.bad-cseq", "process_sip_request",
                         "A handled request whose CSeq number cannot be read is dropped.", drop=True,
                         log="cannot get cseq")
RESPONSE_NO_CODE = _rule("response.no-code", "process_sip_response",
                         "A status code that reads as 0 (or no digits) drops the response.", drop=True,
                         log="cannot get code")
RESPONSE_NO_CSEQ = _rule("response.no-cseq", "process_sip_response",
                         "A response without a parsable CSeq header is dropped.", drop=True,
                         log="cannot parse cseq")
RESPONSE_BAD_CSEQ = _rule("response.bad-cseq", "process_sip_response",
                          "A response whose CSeq number cannot be read is dropped.", drop=True,
                          log="cannot get cseq")
RESPONSE_UNHANDLED = _rule("response.unhandled-method", "process_sip_response",
                           "A response whose CSeq method (one space after the number) has no response handler is accepted.")

# --- SDP: process_sdp() / set_expected_rtp_rtcp() ----------------------------------
SDP_NONE = _rule("sdp.none", "process_sdp", "No \"v=<digits>\" line: no SDP, accepted.")
SDP_SESSION_ADDR = _rule("sdp.session-connection", "process_sdp",
                         "A c= line before the first m= line is the session connection address.")
SDP_MEDIA_UNKNOWN = _rule("sdp.media-unknown", "process_sdp -> sdp_media_type",
                          "An m= line whose type is not \"audio \", \"video \" or \"image \" (case-sensitive) is skipped.")
SDP_MEDIA_PORT_ZERO = _rule("sdp.media-port-zero", "process_sdp",
                            "An m= port of 0 (inactive stream) or without digits is skipped.")
SDP_MEDIA_PORT_RANGE = _rule("sdp.media-port-range", "process_sdp",
                             "An m= port outside 1024-65535 drops the packet.", drop=True, log="wrong port")
SDP_MEDIA_ADDR = _rule("sdp.media-connection", "process_sdp",
                       "A c= line inside the media description overrides the session address.")
SDP_NO_CONNECTION = _rule("sdp.no-connection", "process_sdp",
                          "A media description with no usable c= (media or session) drops the packet.", drop=True,
                          log="cannot parse SDP message")
SDP_MEDIA_LIMIT = _rule("sdp.media-limit", "process_sdp",
                        "At most three media descriptions with expectations are processed per message.")
MEDIA_NOT_DIRECT = _rule("media.direct-media-mismatch", "set_expected_rtp_rtcp",
                         "sip_direct_media: a media address other than the sender's creates no expectation.")
MEDIA_EXTERNAL_SAME_IF = _rule("media.external-same-interface", "set_expected_rtp_rtcp",
                               "sip_external_media: media reachable through the packet's own output interface "
                               "creates no expectation.",
                               needs_params=(("sip_direct_media", False), ("sip_external_media", True)))
MEDIA_OTHER_MASTER = _rule("media.other-master", "set_expected_rtp_rtcp -> __nf_ct_expect_find",
                           "Another master already expects this media tuple (same class and helper): nothing is added.")
MEDIA_EXPECT = _rule("media.expect", "set_expected_rtp_rtcp",
                     "An RTP (even port) and RTCP (port+1) expectation pair of the media class is created.")
MEDIA_ALREADY = _rule("media.already", "set_expected_rtp_rtcp -> nf_ct_expect_related",
                      "-EALREADY (same tuple expected by another master or class) counts as success.")
MEDIA_FAILED = _rule("media.failed", "set_expected_rtp_rtcp",
                     "The expectation could not be added (-EBUSY clash or -EMFILE table full): the packet is dropped.",
                     drop=True, log="cannot add expectation for voice",
                     needs="a clash needs masks that differ (sip_direct_signalling=0 or sip_direct_media=0) "
                           "or a full table: conformance/scenarios/params/ (a VM boot)")

# --- INVITE / UPDATE / PRACK / ACK / BYE --------------------------------------------
INVITE_FLUSH = _rule("invite.flush-media", "process_invite_request",
                     "An INVITE first removes all of the master's media expectations.")
INVITE_CSEQ = _rule("invite.store-cseq", "process_invite_request",
                    "An accepted INVITE stores its CSeq as invite_cseq.")
SDP_REQUEST = _rule("request.sdp", "sip_handlers[]: UPDATE/ACK/PRACK -> process_sdp",
                    "UPDATE, ACK and PRACK requests have their SDP processed.")
BYE_FLUSH = _rule("bye.flush-media", "process_bye_request", "A BYE removes all of the master's media expectations.")
RESPONSE_SDP = _rule("response.sdp", "process_invite/update/prack_response",
                     "A 1xx or 2xx response to INVITE, UPDATE or PRACK has its SDP processed.")
RESPONSE_ERROR_FLUSH = _rule("response.error-flush", "process_invite/update/prack_response",
                             "A non-1xx/2xx response whose CSeq equals invite_cseq removes all media expectations.")
RESPONSE_ERROR_OTHER = _rule("response.error-other-cseq", "process_invite/update/prack_response",
                             "A non-1xx/2xx response with another CSeq changes nothing.")

# --- REGISTER -------------------------------------------------------------------------
REGISTER_EXPECTED_MASTER = _rule("register.expected-master", "process_register_request",
                                 "A connection that was itself expected cannot register: accepted untouched.")
REGISTER_NO_CONTACT = _rule("register.no-contact", "process_register_request",
                            "A REGISTER without a Contact URI is accepted untouched (register_cseq unchanged).")
REGISTER_BAD_CONTACT = _rule("register.bad-contact", "process_register_request",
                             "An unparsable Contact address or port drops the REGISTER. Only on kernels "
                             "without sip_parse_port(): hardened epaddr_len() already refuses such a URI, so "
                             "the Contact counts as absent.", drop=True, log="cannot parse contact",
                             only_profiles=("6.1.170",))
REGISTER_THIRD_PARTY = _rule("register.third-party", "process_register_request",
                             "A Contact address other than the sender's is not supported: accepted untouched.")
REGISTER_TRANSPORT = _rule("register.transport-mismatch", "process_register_request -> ct_sip_parse_transport",
                           "A Contact transport= other than the master's protocol: accepted untouched.")
REGISTER_BAD_EXPIRES = _rule("register.bad-expires", "process_register_request",
                             "A Contact expires= without a number drops the REGISTER.", drop=True,
                             log="cannot parse expires")
REGISTER_UNBIND = _rule("register.unbind", "process_register_request",
                        "Expires 0 (header or contact): no expectation; register_cseq is stored.")
REGISTER_EXPECT = _rule("register.expect", "process_register_request",
                        "A PERMANENT|INACTIVE signalling expectation for the contact is created; register_cseq stored.")
REGISTER_FAILED = _rule("register.failed", "process_register_request",
                        "The signalling expectation could not be added (clash with another master, table full): "
                        "dropped.", drop=True, log="cannot add expectation")
REG_RESPONSE_STALE = _rule("register-response.stale-cseq", "process_register_response",
                           "A REGISTER response whose CSeq is not register_cseq is accepted untouched.")
REG_RESPONSE_PROVISIONAL = _rule("register-response.provisional", "process_register_response",
                                 "A 1xx REGISTER response changes nothing.")
REG_RESPONSE_ERROR = _rule("register-response.error-flush", "process_register_response",
                           "A non-2xx final response removes the first signalling expectation.")
REG_RESPONSE_BAD_CONTACT = _rule("register-response.bad-contact", "process_register_response",
                                 "An unparsable Contact in a 2xx drops it (kernels without sip_parse_port() only, "
                                 "as for the REGISTER).", drop=True, log="cannot parse contact",
                                 only_profiles=("6.1.170",))
REG_RESPONSE_BAD_EXPIRES = _rule("register-response.bad-expires", "process_register_response",
                                 "A Contact expires= without a number drops the 2xx.", drop=True,
                                 log="cannot parse expires")
REG_RESPONSE_SKIP_CONTACT = _rule("register-response.skip-contact", "process_register_response",
                                  "A contact of another address or transport is skipped.")
REG_RESPONSE_REFRESH = _rule("register-response.refresh", "refresh_signalling_expectation",
                             "A 2xx contact matching a signalling expectation activates it and sets its timeout "
                             "to the contact's expires.")
REG_RESPONSE_UNBIND = _rule("register-response.unbind-flush", "process_register_response",
                            "A matching contact with expires 0 ends the walk: the first signalling expectation "
                            "is removed.")
REG_RESPONSE_NO_MATCH = _rule("register-response.no-match-flush", "process_register_response",
                              "No contact refreshed an expectation: the first signalling expectation is removed.")

# --- the expectation table: nf_conntrack_expect.c -------------------------------------------
EXPECT_REPLACE = _rule("expect.replace", "nf_conntrack_expect.c: __nf_ct_expect_check",
                       "Same master, class, tuple and mask: the old expectation is unlinked and replaced.")
EXPECT_ALREADY = _rule("expect.already", "nf_conntrack_expect.c: __nf_ct_expect_check",
                       "Same tuple and mask from another master or class: -EALREADY, nothing inserted.")
EXPECT_CLASH = _rule("expect.clash", "nf_conntrack_expect.c: __nf_ct_expect_check -> expect_clash",
                     "Overlapping tuple under the intersected masks: -EBUSY.")
EXPECT_EVICT = _rule("expect.evict-oldest", "nf_conntrack_expect.c: evict_oldest_expect",
                     "The master's class is at its policy maximum: its oldest expectation of that class goes.")
EXPECT_TABLE_FULL = _rule("expect.table-full", "nf_conntrack_expect.c: __nf_ct_expect_check",
                          "The namespace holds nf_ct_expect_max expectations: -EMFILE.",
                          needs="nf_conntrack_expect_max expectations in one namespace: params/ sets "
                                "expect_max 8, a sysctl only a VM guest may write")
EXPECT_INSERT = _rule("expect.insert", "nf_conntrack_expect.c: nf_ct_expect_insert",
                      "Inserted with the class policy's timeout (180 s).")
EXPECT_EXPIRE = _rule("expect.expire", "nf_conntrack_expect.c: nf_ct_exp_is_expired",
                      "An expectation past its timeout is gone.",
                      needs="a wait of 180 s: conformance/scenarios/slow/ (sipct conformance --slow)")
EXPECT_MATCH = _rule("expect.match", "nf_conntrack_expect.c: nf_ct_find_expectation",
                     "A new connection matching an active expectation is RELATED; a non-permanent expectation "
                     "is used up, a PERMANENT one stays. INACTIVE ones never match.")
MASTER_TIMEOUT = _rule("master.timeout", "nf_conntrack_core.c: nf_ct_remove_expectations",
                       "A master idle for sip_timeout is destroyed with all its expectations.",
                       needs="a wait of sip_timeout (3600 s): params/ sets 10 s (a VM boot)")

# --- NAT: nf_nat_sip.c, on a master whose tuple NAT translated (IPS_NAT_MASK) ---------------
NAT_MESSAGE = _rule("nat.message", "nf_nat_sip.c: nf_nat_sip",
                    "An accepted message on a translated master goes through nf_nat_sip: its addresses are "
                    "mapped to the other side's view of the connection (map_addr).")
NAT_REQUEST_URI = _rule("nat.request-uri", "nf_nat_sip.c: nf_nat_sip -> map_addr",
                        "The Request-URI's host[:port], when it is one end of the connection, is rewritten to "
                        "address:port of the other side (the port is always written).")
NAT_VIA = _rule("nat.via", "nf_nat_sip.c: nf_nat_sip -> map_addr",
                "The first Via of the connection's transport, when it names the sender of a request (the "
                "receiver of a response), is rewritten to the other side's address:port.")
NAT_VIA_MADDR = _rule("nat.via-maddr", "nf_nat_sip.c: nf_nat_sip",
                      "A maddr= of that Via equal to the sender's address (and not already the translated one) "
                      "is rewritten.")
NAT_VIA_RECEIVED = _rule("nat.via-received", "nf_nat_sip.c: nf_nat_sip",
                         "A received= of that Via equal to the destination address is rewritten to the other "
                         "side's source address.")
NAT_VIA_RPORT = _rule("nat.via-rport", "nf_nat_sip.c: nf_nat_sip",
                      "An rport= of that Via (1024-65535) equal to the destination port is rewritten to the other "
                      "side's source port.")
NAT_CONTACT = _rule("nat.contact", "nf_nat_sip.c: nf_nat_sip -> map_addr",
                    "Every Contact URI that is one end of the connection is rewritten to the other side's "
                    "address:port.")
NAT_FROM_TO = _rule("nat.from-to", "nf_nat_sip.c: nf_nat_sip -> map_sip_addr",
                    "The first From and the first To URI that are one end of the connection are rewritten.")
NAT_FORCED_DPORT = _rule("nat.forced-dport", "nf_nat_sip.c: nf_nat_sip",
                         "A reply-direction UDP packet of a master with forced_dport is sent to that port (the Via "
                         "port of the request), not to the port the request came from.")
NAT_FORCED_DPORT_TCP = _rule("nat.forced-dport-tcp", "nf_nat_sip.c: nf_nat_sip",
                             "A reply-direction message of a TCP master with forced_dport (a UDP Via with another "
                             "port in a request) is dropped: \"forced_dport only expected with UDP\" (6.1.176 on; "
                             "6.1.170 rewrites the TCP header as if it were UDP).", drop=True,
                             only_profiles=("6.1.176", "6.1.192", "6.18"))
NAT_MANGLE_FAILED = _rule("nat.mangle-failed", "nf_nat_helper.c: enlarge_skb",
                          "A rewrite that would make the packet longer than 65535 bytes fails: the packet is "
                          "dropped.", drop=True, log="cannot mangle SIP message")
NAT_CONTENT_LENGTH = _rule("nat.content-length", "nf_nat_sip.c: mangle_content_len",
                           "After an SDP rewrite Content-Length (or l:) is set to the bytes from \"v=\" to the end "
                           "of the message.")
NAT_SDP_MEDIA = _rule("nat.sdp-media", "nf_nat_sip.c: nf_nat_sdp_media",
                      "A media pair of a translated master is expected at the sender's translated address: the "
                      "expectation keeps the SDP's address and port as its NAT part (saved, direction, expectfn "
                      "sip).")
NAT_SDP_MEDIA_MOVED = _rule("nat.sdp-media-port-moved", "nf_nat_sip.c: nf_nat_sdp_media",
                            "-EBUSY for the RTP or RTCP port: the search moves on by 2 until a free pair.",
                            needs_params=(("sip_direct_media", False),))
NAT_SDP_MEDIA_NO_PORT = _rule("nat.sdp-media-no-port", "nf_nat_sip.c: nf_nat_sdp_media",
                              "Any other refusal (-EALREADY too, which the plain path accepts) or no free pair up "
                              "to 65535: the packet is dropped.", drop=True, log="all ports in use for SDP media")
NAT_SDP_PORT = _rule("nat.sdp-port", "nf_nat_sip.c: nf_nat_sdp_port",
                     "The m= port is rewritten to the expectation's port when that differs.")
NAT_SDP_ADDR = _rule("nat.sdp-addr", "nf_nat_sip.c: nf_nat_sdp_addr",
                     "A media-level c= is rewritten to the media's (translated) address.")
NAT_SDP_SESSION = _rule("nat.sdp-session", "nf_nat_sip.c: nf_nat_sdp_session",
                        "o= and the session c= are rewritten to the last media's address (rtp_addr).")
NAT_SDP_SESSION_NO_OWNER = _rule("nat.sdp-session-no-owner", "nf_nat_sip.c: nf_nat_sdp_session",
                                 "No parsable o= before the first m=: the packet is dropped.", drop=True,
                                 log="cannot mangle SDP")
NAT_DIRECT_RTP = _rule("nat.direct-rtp", "set_expected_rtp_rtcp",
                       "A translated master finds another master's expectation whose NAT part differs from its "
                       "tuple: media goes straight to the saved address and port (m= and c= rewritten), expected "
                       "without NAT.", needs_params=(("sip_direct_media", False),))
NAT_REGISTER = _rule("nat.register", "nf_nat_sip.c: nf_nat_sip_expect",
                     "A REGISTER of a translated master expects the incoming signalling at the sender's "
                     "translated address; the Contact's address and port are the NAT part.")
NAT_REGISTER_CONTACT = _rule("nat.register-contact", "nf_nat_sip.c: nf_nat_sip_expect",
                             "The REGISTER's Contact is rewritten to the expectation's address and port.")
NAT_REGISTER_NO_PORT = _rule("nat.register-no-port", "nf_nat_sip.c: nf_nat_sip_expect -> nf_nat_exp_find_port",
                             "The expectation is refused (-EBUSY for 128 random ports, or another error): the "
                             "REGISTER is dropped.", drop=True, log="all ports in use for SIP",
                             needs="a full expectation table: conformance/scenarios/params/ sets expect_max 8 (a VM boot)")
NAT_SEQ_ADJUST = _rule("nat.seq-adjust", "nf_nat_sip.c: nf_nat_sip_seq_adjust",
                       "TCP: the length change of the segment's messages, summed, shifts the sequence numbers of "
                       "what follows in that direction (and the peer's ACKs back).")
NAT_EXPECTED = _rule("nat.expected", "nf_nat_sip.c: nf_nat_sip_expected",
                     "A connection matching a NAT expectation is sent to the saved address and port.")
NAT_EXPECTED_PAIR = _rule("nat.expected-pair-source", "nf_nat_sip.c: nf_nat_sip_expected",
                          "Media from an address:port another expectation of the master saved leaves from that "
                          "expectation's (translated) address and port: symmetric RTP.")
NAT_EXPECTED_MASTER = _rule("nat.expected-master-source", "nf_nat_sip.c: nf_nat_sip_expected",
                            "Otherwise media (or signalling) from the signalling peer's address leaves from the "
                            "address the master's peer sends to.")
