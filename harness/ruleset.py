"""The router's nftables rulesets, as text: the helper's table and the NAT table."""

from __future__ import annotations

from collections.abc import Sequence

from sipct.spec.natmap import NatTopology


def render_ruleset(sip_ports: Sequence[int], helper: bool, helper_type: str | Sequence[str] = "sip") -> str:
    """The router's nftables ruleset.

    ``helper_type`` is the name of the helper the ``ct helper`` objects
    attach (nft_ct_helper_obj_init() looks it up among kernel and userspace
    helpers alike): "sip" is nf_conntrack_sip, the reference helper runs
    under another name next to it (sipct.harness.threeway). Several names
    (the reference helper's workers, sipct.reference.workers) get an object
    each, and a new master gets one of them by the hash of its source
    address and port (``ct helper set jhash ... mod N map``), with a fixed
    seed (nft_jhash_init() draws a random one otherwise) so that a lab
    spreads the same dialogs the same way.

    The helper is attached in a filter-priority forward chain: `ct helper
    set` needs the conntrack that the conntrack hook (priority -200) has
    created by then, and only takes effect on a not-yet-confirmed entry,
    i.e. on the first packet of a connection.  The helper itself then runs
    from the confirm hook at postrouting, on that very packet.

    Without the helper the chain still holds a ct expression: any ct
    expression makes the namespace register the conntrack hooks
    (nf_ct_netns_get), which are otherwise absent from a fresh namespace.
    The baseline thus differs from the helper lab by the helper alone.
    """
    chain = "type filter hook forward priority filter; policy accept;"
    if not helper:
        return (
            f"table inet sipct {{\n  chain forward {{ {chain}\n    ct state new counter\n  }}\n}}\n"
        )
    ports = ", ".join(str(int(p)) for p in sip_ports)
    types = (helper_type,) if isinstance(helper_type, str) else tuple(helper_type)
    lines = ["table inet sipct {"]
    rules = []
    for proto in ("udp", "tcp"):
        if len(types) == 1:
            lines.append(f'  ct helper sip-{proto} {{ type "{types[0]}" protocol {proto}; l3proto inet; }}')
            rules.append(f'    {proto} dport {{ {ports} }} ct helper set "sip-{proto}"')
            continue
        for i, name in enumerate(types):
            lines.append(f'  ct helper sip-{proto}-{i} {{ type "{name}" protocol {proto}; l3proto inet; }}')
        spread = ", ".join(f'{i} : "sip-{proto}-{i}"' for i in range(len(types)))
        for ip in ("ip", "ip6"):
            rules.append(f"    {proto} dport {{ {ports} }} ct helper set jhash {ip} saddr . {proto} sport "
                         f"mod {len(types)} seed 0x0 map {{ {spread} }}")
    return "\n".join([*lines, f"  chain forward {{ {chain}", *rules, "  }", "}", ""])


NAT_TABLE = "sipct_nat"


def render_nat_ruleset(nat: NatTopology, forward: str = "accept", sip_ports: Sequence[int] = (5060,)) -> str:
    """The dialog's own table: the router's nat chains (sipct.spec.natmap) -
    destination NAT at prerouting, source NAT at postrouting, first match
    wins - and, with ``forward`` "drop", a forward chain that lets through
    only established and related connections, new ones to the SIP ports
    (after destination NAT) and port forwards; a packet must pass it and the
    helper's chain (both are base chains of the forward hook). The table is
    replaced as a whole ("table ...; delete table ...": nft creates it if
    missing, so the delete never fails)."""
    out = [f"table inet {NAT_TABLE} {{}}", f"delete table inet {NAT_TABLE}"]
    if not nat and forward == "accept":
        return "\n".join(out) + "\n"
    pre, post = [], []
    for d in nat.dnat:
        fam = "ip" if d.addr.version == 4 else "ip6"
        to = f"{d.to}:{d.to_port}" if d.to.version == 4 else f"[{d.to}]:{d.to_port}"
        post_l4 = _l4(d.proto)
        pre.append(f"{fam} daddr {d.addr} {post_l4} th dport {d.port} dnat {fam} to {to}")
    for r in nat.snat:
        fam = "ip" if r.inside.version == 4 else "ip6"
        match = f"{fam} saddr {r.host if r.host is not None else r.inside} {fam} daddr != {r.inside}"
        if r.sport is not None or r.proto is not None or r.port is not None:
            match += f" {_l4(r.proto)}"
        if r.sport is not None:
            match += f" th sport {r.sport}"
        if r.to is None:
            post.append(f"{match} masquerade")
        else:
            to = str(r.to) if r.port is None else (f"{r.to}:{r.port}" if r.to.version == 4 else f"[{r.to}]:{r.port}")
            post.append(f"{match} snat {fam} to {to}")
    out.append(f"table inet {NAT_TABLE} {{")
    if nat:
        out.append("  chain pre { type nat hook prerouting priority dstnat; policy accept;")
        out.extend(f"    {line}" for line in pre)
        out.append("  }")
        out.append("  chain post { type nat hook postrouting priority srcnat; policy accept;")
        out.extend(f"    {line}" for line in post)
        out.append("  }")
    if forward == "drop":
        ports = ", ".join(str(int(p)) for p in sip_ports)
        out.append("  chain forward { type filter hook forward priority filter + 10; policy drop;")
        out.append("    ct state established,related accept")
        out.append(f"    meta l4proto {{ tcp, udp }} th dport {{ {ports} }} accept")
        out.append("    ct status dnat accept")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _l4(proto: int | None) -> str:
    return {6: "meta l4proto tcp", 17: "meta l4proto udp"}.get(proto or 0, "meta l4proto { tcp, udp }")
