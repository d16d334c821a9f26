"""Sphinx directives that render the spec's own tables, so the published
specification cannot drift from the code:

* ``.. sipct-machine:: NAME`` - a state diagram and transition table (guards,
  actions, the kernel function of each event) compiled from the
  python-statemachine class in ``sipct.spec.machines``;
* ``.. sipct-module-doc:: MODULE`` - a module's docstring (the machines' theory of operation);
* ``.. sipct-rules::`` - the rule catalogue (``sipct.spec.rules.RULES``);
* ``.. sipct-profiles::`` - the kernel version profiles;
* ``.. sipct-params::`` - the module parameters and their defaults;
* ``.. sipct-policy::`` - ``sip_exp_policy[]``.
"""

from __future__ import annotations

from dataclasses import fields

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.util.nodes import nested_parse_with_titles


def machine_dot(name: str) -> str:
    """Graphviz source for one compiled machine: an edge per (source, target),
    labelled with each transition's event, guards and actions."""
    from sipct.spec.machines import MACHINES

    compiled = MACHINES[name]
    lines = [f'digraph "{name}" {{', "  rankdir=LR;", '  node [shape=box, style=rounded, fontname="sans"];',
             '  edge [fontname="sans", fontsize=9];', '  __start [shape=point, label=""];',
             f"  __start -> {compiled.initial};"]
    for state in compiled.states:
        shape = ', peripheries=2' if state in compiled.finals else ""
        lines.append(f'  {state} [label="{state}"{shape}];')
    edges: dict[tuple[str, str], list[str]] = {}
    for t in compiled.transitions():
        edges.setdefault((t.source, t.target), []).append(transition_text(t))
    for (source, target), labels in edges.items():
        label = "\\l".join(labels) + "\\l"
        lines.append(f'  {source} -> {target} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines)


def transition_text(t) -> str:  # type: ignore[no-untyped-def]
    """``event [guards] / actions``, as statecharts write a transition."""
    return t.label.replace("[", " [") + (f" / {', '.join(t.actions)}" if t.actions else "")


def _first_line(fn: object) -> str:
    return ((getattr(fn, "__doc__", None) or "").strip().splitlines() or [""])[0]


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
        # with titles: a module's docstring has sections of its own
        nested_parse_with_titles(self.state, StringList(self.render(), source="sipct-generated"), node)
        return node.children


class MachineDirective(_Generated):
    required_arguments = 1

    def render(self) -> list[str]:
        from sipct.spec.machines import EVENT_ORIGINS, MACHINES

        name = self.arguments[0]
        compiled = MACHINES[name]
        cls = compiled.cls
        out = [".. graphviz::", ""]
        out += ["   " + line for line in machine_dot(name).splitlines()]
        out += ["", f"*{(cls.__doc__ or '').strip()}* Initial state: ``{compiled.initial}``"
                + (f"; final states: {', '.join(f'``{s}``' for s in sorted(compiled.finals))}."
                   if compiled.finals else "."), ""]
        rows = [[f"``{t.source}``", f"``{t.event}``",
                 ", ".join(f"``{g}``" if want else f"not ``{g}``" for g, want in t.guards),
                 ", ".join(f"``{a}``" for a in t.actions), f"``{t.target}``"]
                for t in compiled.transitions()]
        out += ["Transitions, in the order the guards are tried:", ""]
        out += _table(["from", "event", "guards", "actions", "to"], rows, "14 12 26 32 16")
        out += _table(["event", "caused by (kernel)"],
                      [[f"``{e}``", EVENT_ORIGINS[name][e]] for e in compiled.events], "20 80")
        guards = sorted({g for t in compiled.transitions() for g, _ in t.guards})
        actions = sorted({a for t in compiled.transitions() for a in t.actions})
        rows = [[f"``{n}``", kind, _first_line(getattr(cls, n))]
                for kind, names in (("guard", guards), ("action", actions)) for n in names]
        if rows:
            out += _table(["name", "kind", "what it does"], rows, "25 10 65")
        return out


class ModuleDocDirective(_Generated):
    """The docstring of a module, as published text (its theory of operation)."""

    required_arguments = 1

    def render(self) -> list[str]:
        import importlib
        import inspect

        return (inspect.getdoc(importlib.import_module(self.arguments[0])) or "").splitlines() + [""]


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


def setup(app):  # type: ignore[no-untyped-def]
    app.add_directive("sipct-machine", MachineDirective)
    app.add_directive("sipct-module-doc", ModuleDocDirective)
    app.add_directive("sipct-rules", RulesDirective)
    app.add_directive("sipct-profiles", ProfilesDirective)
    app.add_directive("sipct-params", ParamsDirective)
    app.add_directive("sipct-policy", PolicyDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
