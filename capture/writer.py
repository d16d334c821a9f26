"""Writing an imported dialog as a file a person reads and edits: messages as
text with ``{host}`` templates and ``{body_length}`` where the bytes allow it,
``raw:`` bytes where they do not, the capture's frame numbers in comments."""

from __future__ import annotations

import re

from sipct.spec.dialog import TEMPLATE, Connect, Send, Step, Wait, quote_bytes, split_at_line, yaml_scalar
from sipct.spec.expectation import IPPROTO_TCP
from sipct.spec.params import ModuleParams

from .addresses import IPV4_LITERAL, IPV6_LITERAL, AddressPlan
from .messages import datagram_message, split_messages


def render_dialog(name: str, description: str, family: int, params: ModuleParams | None, plan: AddressPlan,
                  steps: list[Step], notes: list[str], raw: set[int]) -> str:
    """``raw``: the steps to write as raw bytes whatever they hold."""
    payloads = [s.payload for s in steps if isinstance(s, Send)]
    templates = not any(_has_template(p, plan) for p in payloads)
    w = _Writer(plan, family, templates)
    lines = [f"name: {yaml_scalar(name)}", f"description: {yaml_scalar(description)}", f"family: ipv{family}"]
    if not templates:
        lines.append("templates: false  # a message holds {...} text that reads like a template")
    if params is not None:
        lines += ["params:", f"  ports: [{', '.join(map(str, params.ports))}]"]
    lines.append("hosts:")
    for addr, host in plan.names.items():
        lab = plan.lab[addr]
        lines.append(f"  {host}: {yaml_scalar(str(lab))}" + (f"  # {addr} in the capture" if lab != addr else ""))
    if plan.others:
        lines.append("# Addresses only the messages name, rewritten as: "
                     + ", ".join(f"{a} -> {b}" for a, b in plan.others.items()))
    lines.append("steps:")
    for index, (step, note) in enumerate(zip(steps, notes)):
        if note:
            lines.append(f"  # {note}")
        if isinstance(step, Wait):
            lines.append(f"  - wait: {step.seconds:g}")
        elif isinstance(step, Connect):
            lines.append(f"  - connect: {step.src} -> {step.dst}")
        else:
            assert isinstance(step, Send)
            lines += w.send(step, force_raw=index in raw)
    return "\n".join(lines) + "\n"


def _has_template(payload: bytes, plan: AddressPlan) -> bool:
    names = set(plan.names.values()) | {"body_length"}
    text = payload.decode("latin-1")
    return any(m.group(1) in names for m in TEMPLATE.finditer(text))


class _Writer:
    def __init__(self, plan: AddressPlan, family: int, templates: bool) -> None:
        self.family = family
        self.templates = templates
        self.host_of = {str(addr): name for name, addr in plan.hosts.items()}

    def send(self, step: Send, *, force_raw: bool) -> list[str]:
        lines = [f"  - send: {step.src} -> {step.dst}"]
        tcp = step.proto == IPPROTO_TCP
        if tcp:
            lines.append("    transport: tcp")
        payload = step.payload
        eol = _eol(payload)
        messages = (split_messages(payload) if tcp else [datagram_message(payload)]) or []
        texts = [] if force_raw or eol is None else [self.text(payload[m.start:m.end], eol) for m in messages]
        if len(messages) == 1 and texts[0:1] != [None] and texts:
            lines += [f"    message: {_block_header(texts[0])}", *_block(texts[0], "      ")]
        elif tcp and len(messages) > 1 and any(t is not None for t in texts):
            lines.append("    messages:")
            for m, t in zip(messages, texts):
                if t is None:
                    lines.append(f"      - raw: {quote_bytes(payload[m.start:m.end], '          ')}")
                else:
                    lines += [f"      - {_block_header(t)}", *_block(t, "        ")]
        else:
            lines.append(f"    raw: {quote_bytes(payload, '      ')}")
        if eol not in (None, b"\r\n") and any(line.startswith(("    message:", "    messages:")) for line in lines):
            lines.append("    eol: lf")
        if (split := split_at_line(step)) is not None:
            lines.append(split)
        return lines

    def text(self, data: bytes, eol: bytes) -> str | None:
        """The message as block text (lines joined by LF), or None when only
        raw bytes say it: not UTF-8, control characters, no final line end."""
        if not data.endswith(eol) or data.strip(b"\r\n") == b"":
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        lines = text[:-len(eol)].split(eol.decode())
        if any(not (ch.isprintable() or ch == "\t") for line in lines for ch in line) or lines[0][:1] in (" ", "\t"):
            return None
        if self.templates:
            cut = data.find(eol * 2)
            body_length = None if cut < 0 else len(data) - cut - 2 * len(eol)
            lines = self.templated(lines, body_length)
        return "\n".join(lines) + "\n"

    def templated(self, lines: list[str], body_length: int | None) -> list[str]:
        """Host addresses as {host} ({host.uri} in brackets), a Content-Length
        that counts the body exactly as {body_length}: an edited message stays
        consistent."""
        out = []
        in_headers = True
        for line in lines:
            if not line:
                in_headers = False
            elif in_headers and body_length is not None:
                header = re.match(r"(?i)(?:content-length|l)[ \t]*:[ \t]*(\d+)", line)
                if header and int(header.group(1)) == body_length > 0:
                    line = line[:header.start(1)] + "{body_length}" + line[header.end(1):]
            out.append(self.addresses(line))
        return out

    def addresses(self, line: str) -> str:
        if self.family == 6:  # {name.uri} writes the brackets of an IPv6 URI host
            for text, name in self.host_of.items():
                line = line.replace(f"[{text}]", f"{{{name}.uri}}")
        literal = _TEXT_LITERALS[self.family]
        return literal.sub(lambda m: f"{{{self.host_of[m.group(0)]}}}" if m.group(0) in self.host_of
                           else m.group(0), line)


# The host addresses are written in their canonical form, so matching the text is enough.
_TEXT_LITERALS = {4: re.compile(IPV4_LITERAL.pattern.decode()), 6: re.compile(IPV6_LITERAL.pattern.decode())}


def _eol(payload: bytes) -> bytes | None:
    crlf = payload.count(b"\r\n")
    if crlf and crlf == payload.count(b"\n") == payload.count(b"\r"):
        return b"\r\n"
    if b"\r" not in payload and b"\n" in payload:
        return b"\n"
    return None


def _block_header(text: str) -> str:
    # '|' keeps one final line end; '|+' all of them (a message without a body ends with a blank line).
    return "|+" if text.endswith("\n\n") else "|"


def _block(text: str, indent: str) -> list[str]:
    return [f"{indent}{line}" if line else "" for line in text[:-1].split("\n")]
