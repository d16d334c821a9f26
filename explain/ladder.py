"""A dialog and its prediction as a ladder diagram (SVG): the hosts as lanes,
each message an arrow across the router where the helper sits, the
expectations it opened (pinholes), refreshed and closed as marks on the lane
of the host they let traffic in to, drops in red.

Self-contained SVG text (no scripts, fonts or images from elsewhere): the
explain page embeds it, and so can the docs.
"""

from __future__ import annotations

from html import escape

from sipct.spec.dialog import Connect, DeleteConntrack, Send, Wait
from sipct.spec.predict import Prediction
from sipct.spec.printable import printable

from .words import StepExplanation, explain

LANE = 320  # px between host lanes
LEFT = 120  # the step labels' column
TOP = 70
ROW = 40
MARK = 16  # one expectation mark's line
FONT = "font-family:ui-monospace,Menlo,Consolas,monospace"
ACCEPT, DROP, PINHOLE, CLOSED, REFRESHED, MUTED = "#1f3b73", "#c62828", "#2e7d32", "#757575", "#1565c0", "#9e9e9e"


def ladder_svg(prediction: Prediction, where: list[str] | None = None,
               explanations: list[StepExplanation] | None = None) -> str:
    d = prediction.dialog
    steps = explanations or explain(prediction, where)
    hosts = list(d.hosts)
    x = {h: LEFT + 40 + i * LANE for i, h in enumerate(hosts)}
    router_x = (x[hosts[0]] + x[hosts[-1]]) / 2 if len(hosts) > 1 else x[hosts[0]]
    body: list[str] = []
    y = TOP + 20
    for s, e in zip(prediction.steps, steps):
        step = s.step
        label = f"{e.where}" + (f"  t={s.time:g}s" if s.time else "")
        body.append(_text(8, y + 4, label, MUTED, size=11))
        title = escape(printable("\n".join(e.lines())))
        if isinstance(step, Wait):
            body.append(f'<line x1="{LEFT}" y1="{y}" x2="{x[hosts[-1]] + 60}" y2="{y}" stroke="{MUTED}" '
                        f'stroke-dasharray="2 4"><title>{title}</title></line>')
            body.append(_text(router_x, y - 5, f"wait {step.seconds:g} s", MUTED, anchor="middle"))
        elif isinstance(step, (Send, Connect, DeleteConntrack)):
            a, b = x[step.src.host], x[step.dst.host]
            dropped = s.verdict == "drop"
            colour = DROP if dropped else (MUTED if isinstance(step, DeleteConntrack) else ACCEPT)
            end = router_x if dropped else b
            dash = ' stroke-dasharray="6 4"' if isinstance(step, (Connect, DeleteConntrack)) else ""
            marker = "" if dropped else f' marker-end="url(#arrow{"-muted" if colour == MUTED else ""})"'
            body.append(f'<g><title>{title}</title><line x1="{a}" y1="{y}" x2="{end}" y2="{y}" stroke="{colour}" '
                        f'stroke-width="1.6"{dash}{marker}/>')
            if dropped:
                body.append(f'<path d="M{end - 6},{y - 6} L{end + 6},{y + 6} M{end - 6},{y + 6} L{end + 6},{y - 6}" '
                            f'stroke="{DROP}" stroke-width="2.4"/>')
            text = _first_line(e.step)
            body.append(_text((a + b) / 2, y - 6, text, colour, anchor="middle"))
            if dropped and e.drop is not None:
                body.append(_text(router_x + 10, y + 14, f"dropped: {e.drop.id}", DROP, size=11))
            body.append("</g>")
        marks = ([(c, PINHOLE, "+") for c in e.created] + [(c, REFRESHED, "↻") for c in e.refreshed]
                 + [(c, CLOSED, "−") for c in e.removed])
        my = y + (26 if s.verdict == "drop" else 14)
        for change, colour, sign in marks:
            lane = _lane_of(change.expectation, hosts)
            mx = x.get(lane, router_x)
            body.append(f'<circle cx="{mx}" cy="{my}" r="4" fill="{colour}"/>')
            timeout = "" if sign == "−" else f" ({change.timeout:.0f} s)"
            body.append(_text(mx + 8, my + 4, f"{sign} {change.expectation}{timeout}", colour, size=11))
            my += MARK
        y = max(y + ROW, my + 12)
    height = y + 10
    width = x[hosts[-1]] + 340  # room for the marks right of the last lane
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(d.name)}: ladder diagram">',
            '<defs>' + "".join(f'<marker id="arrow{suffix}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
                               f'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
                               f'fill="{fill}"/></marker>' for suffix, fill in (("", ACCEPT), ("-muted", MUTED)))
            + '</defs>',
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    head.append(f'<line x1="{router_x}" y1="{TOP - 10}" x2="{router_x}" y2="{height - 10}" stroke="#e0e0e0" '
                f'stroke-width="10"/>')
    head.append(_text(router_x, TOP - 14, "router (nf_conntrack_sip)", MUTED, anchor="middle", size=11))
    for h in hosts:
        head.append(f'<line x1="{x[h]}" y1="{TOP}" x2="{x[h]}" y2="{height - 10}" stroke="#424242"/>')
        head.append(_text(x[h], 20, h, "#212121", anchor="middle", size=14, bold=True))
        head.append(_text(x[h], 36, str(d.hosts[h]), MUTED, anchor="middle", size=11))
    return "\n".join(head + body + ["</svg>"]) + "\n"


def _first_line(step_text: str) -> str:
    # "udp ua:5060 -> server:5060: INVITE sip:..." -> "INVITE sip:..." (the lanes say who)
    _, _, message = step_text.partition(": ")
    text = message or step_text
    return text if len(text) <= 46 else text[:45] + "…"


def _lane_of(expectation: str, hosts: list[str]) -> str | None:
    """The host an expectation lets traffic in to: 'udp a:* -> b:7078 audio' -> b."""
    _, _, rest = expectation.partition("-> ")
    host = rest.split(":", 1)[0]
    return host if host in hosts else None


def _text(x: float, y: float, text: str, colour: str, *, anchor: str = "start", size: int = 12,
          bold: bool = False) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (f'<text x="{x:g}" y="{y:g}" fill="{colour}" font-size="{size}" text-anchor="{anchor}"{weight} '
            f'style="{FONT}">{escape(_visible(text))}</text>')


def _visible(text: str) -> str:
    """XML 1.0 cannot hold most control characters at all: shown escaped."""
    return printable(text).replace("\n", " ")
