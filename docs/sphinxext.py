"""Sphinx directives that render the spec's own tables, so the published
specification cannot drift from the code:

* ``.. sipct-machine:: NAME`` - a state diagram and transition table compiled
  from the python-statemachine class in ``sipct.spec.machines``;
* ``.. sipct-rules::`` - the rule catalogue (``sipct.spec.rules.RULES``);
* ``.. sipct-profiles::`` - the kernel version profiles;
* ``.. sipct-params::`` - the module parameters and their defaults;
* ``.. sipct-policy::`` - ``sip_exp_policy[]``.
"""

from __future__ import annotations

import re
from dataclasses import fields

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList


def machine_dot(name: str) -> str:
    """Graphviz source for one compiled machine."""
    from sipct.spec.machines import MACHINES

    _, compiled = MACHINES[name]
    lines = [f'digraph "{name}" {{', "  rankdir=LR;", '  node [shape=box, style=rounded, fontname="sans"];',
             '  edge [fontname="sans", fontsize=10];', '  __start [shape=point, label=""];',
             f"  __start -> {compiled.initial};"]
    for state in compiled.states:
        shape = ', peripheries=2' if state in compiled.finals else ""
        lines.append(f'  {state} [label="{state}"{shape}];')
    edges: dict[tuple[str, str], list[str]] = {}
    for (source, event), target in compiled.table.items():
        edges.setdefault((source, target), []).append(event)
    for (source, target), events in edges.items():
        lines.append(f'  {source} -> {target} [label="{", ".join(events)}"];')
    lines.append("}")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], widths: str | None = None) -> list[str]:
    out = [".. list-table::", "   :header-rows: 1"]
    if widths:
        out.append(f"   :widths: {widths}")
    out.append("")
    for row in [header, *rows]:
        first = True
        for cell in row:
            text = " ".join(str(cell).split()) or "\\-"
            out.append(f"   {'* -' if first else '  -'} {text}")
            first = False
    out.append("")
    return out


class _Generated(Directive):
    def render(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(self.render(), source="sipct-generated"), self.content_offset, node)
        return node.children


class MachineDirective(_Generated):
    required_arguments = 1

    def render(self) -> list[str]:
        from sipct.spec.machines import EVENT_ORIGINS, MACHINES

        name = self.arguments[0]
        cls, compiled = MACHINES[name]
        out = [".. graphviz::", ""]
        out += ["   " + line for line in machine_dot(name).splitlines()]
        out += ["", f"*{(cls.__doc__ or '').strip()}* Initial state: ``{compiled.initial}``"
                + (f"; final states: {', '.join(f'``{s}``' for s in sorted(compiled.finals))}."
                   if compiled.finals else "."), ""]
        rows = [[f"``{source}``", f"``{event}``", f"``{target}``", EVENT_ORIGINS[name].get(event, "")]
                for (source, event), target in compiled.table.items()]
        return out + _table(["from", "event", "to", "caused by (kernel)"], rows, "15 15 15 55")


class RulesDirective(_Generated):
    def render(self) -> list[str]:
        from sipct.spec.rules import RULES

        rows = [[f"``{r.id}``", f"``{r.function}``", r.summary + (f' Kernel log: "{r.log}".' if r.log else ""),
                 "drop" if r.drop else "accept"] for r in RULES.values()]
        return _table(["rule", "kernel function", "behaviour", "verdict"], rows, "20 25 45 10")


class ProfilesDirective(_Generated):
    def render(self) -> list[str]:
        from sipct.spec.profiles import PROFILES, KernelProfile

        features = KernelProfile.feature_names()
        rows = [[f"``{p.name}``", p.description, *("yes" if getattr(p, f) else "no" for f in features)]
                for p in PROFILES.values()]
        return _table(["profile", "kernels", *[f"``{f}``" for f in features]], rows)


class ParamsDirective(_Generated):
    def render(self) -> list[str]:
        from sipct.spec.params import ModuleParams

        defaults = ModuleParams()
        docs = {
            "ports": "Destination ports that get the helper (the lab's ``ct helper set`` rule); up to 8.",
            "sip_timeout": "Seconds a master lives after its last packet with payload.",
            "sip_direct_signalling": "REGISTER expectations accept only the registrar as source.",
            "sip_direct_media": "Media expectations only for the sender's own address, from the peer.",
            "sip_external_media": "With direct media off: no expectation for media reachable through "
                                  "the signalling packet's output interface.",
            "expect_max": "``nf_conntrack_expect_max``: the namespace's expectation limit.",
        }
        rows = [[f"``{f.name}``", f"``{getattr(defaults, f.name)}``", docs.get(f.name, "")]
                for f in fields(ModuleParams)]
        return _table(["parameter", "default", "meaning"], rows, "25 15 60")


class PolicyDirective(_Generated):
    def render(self) -> list[str]:
        from sipct.spec.expectation import SIP_EXPECT_POLICY

        rows = [[f"``{c.label}`` ({int(c)})", str(p.max_expected), f"{p.timeout} s"]
                for c, p in SIP_EXPECT_POLICY.items()]
        return _table(["class", "max per master", "timeout"], rows)


_QUOTED_ANNOTATION = re.compile(r"(:\s*)'([^']*)'")


def _unquote_annotations(app, what, name, obj, options, signature, return_annotation):  # type: ignore[no-untyped-def]
    """Annotations that stayed strings (``from __future__ import annotations``
    where autodoc could not evaluate them) lose their quotes, so that the
    Python domain parses - and links - the types inside them; a dataclass
    field's ``<factory>`` default (not Python, so the whole argument list would
    go unparsed) reads ``...``."""
    if signature:
        signature = _QUOTED_ANNOTATION.sub(r"\1\2", signature).replace("= <factory>", "= ...")
    if return_annotation and return_annotation.startswith("'") and return_annotation.endswith("'"):
        return_annotation = return_annotation[1:-1]
    return signature, return_annotation


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-signature", _unquote_annotations)
    app.add_directive("sipct-machine", MachineDirective)
    app.add_directive("sipct-rules", RulesDirective)
    app.add_directive("sipct-profiles", ProfilesDirective)
    app.add_directive("sipct-params", ParamsDirective)
    app.add_directive("sipct-policy", PolicyDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
