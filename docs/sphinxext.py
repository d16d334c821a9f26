"""Sphinx directives that render the spec's own tables, so the published
specification cannot drift from the code:

* ``.. sipct-machine:: NAME`` - a state diagram and transition table (guards,
  actions, the kernel function of each event) compiled from the
  python-statemachine class in ``sipct.spec.machines``;
* ``.. sipct-module-doc:: MODULE`` - a module's docstring (the machines' theory of operation);
* ``.. sipct-rules::`` - the rule catalogue (``sipct.spec.rules.RULES``), grouped
  by phase, one anchor ``rule-<id>`` per rule;
* ``:rule:`register.unbind``` - a link to a rule (an unknown id fails the build);
* ``.. sipct-ladder:: PATH`` - a dialog file drawn as a ladder, with its steps'
  verdicts, rules and expectation table, and a column per kernel profile
  that predicts otherwise - computed by the spec at build time;
* ``.. sipct-profiles::`` - the kernel version profiles;
* ``.. sipct-params::`` - the module parameters and their defaults;
* ``.. sipct-policy::`` - ``sip_exp_policy[]``.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.domains import Domain, ObjType
from sphinx.util import logging
from sphinx.util.nodes import make_refnode, nested_parse_with_titles

logger = logging.getLogger(__name__)


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


MACHINE_LEGEND = [
    "Legend: a rounded box is a state; the arrow from the dot points at the initial state; a double border "
    "marks a final state (the machine instance ends there); an arrow is a transition, labelled with its "
    "event, the guards that must hold (``not`` for one that must not) and the actions it runs; an arrow "
    "back to its own box keeps the state. The first table lists every transition in the order its guards "
    "are tried (the first whose guards hold is taken); an event that no transition of the current state "
    "takes raises :class:`~sipct.spec.transitions.IllegalTransition`. The second names the kernel code "
    "behind each event, the third what each guard and action does.",
]


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
                   if compiled.finals else "."), "", *MACHINE_LEGEND, ""]
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


# --- the rule catalogue ------------------------------------------------------------------
# Rules grouped by the phase of the packet's path they belong to, from the
# rule id's prefix (the part before the first "."). A prefix missing here
# fails the build.
RULE_GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Helper entry and the master conntrack", ("helper", "master"),
     "``sip_help_udp()`` / ``sip_help_tcp()`` and the conntrack core: which packets are helped at all, "
     "the master's timeout, and what a dropped first packet takes with it."),
    ("TCP framing", ("tcp",),
     "``sip_help_tcp()`` cuts a segment into messages by ``Content-Length``."),
    ("Dispatch and requests", ("msg", "request"),
     "``process_sip_msg()`` and ``process_sip_request()``: request or response, the method's handler, "
     "the CSeq every handled request needs."),
    ("Responses", ("response",),
     "``process_sip_response()`` and the INVITE, UPDATE and PRACK response handlers."),
    ("INVITE, BYE and SDP", ("invite", "bye", "sdp", "media"),
     "The INVITE and BYE handlers, ``process_sdp()`` and ``set_expected_rtp_rtcp()``: media expectations."),
    ("REGISTER", ("register", "register-response"),
     "``process_register_request()`` and ``process_register_response()``: the signalling expectation "
     "of a registration."),
    ("The expectation table", ("expect",),
     "``nf_conntrack_expect.c``: insertion, replacement, eviction, limits, expiry and matching."),
    ("NAT", ("nat",),
     "``nf_nat_sip.c``: the rewrites of a translated master's messages, its NAT expectations, the bindings of "
     "the connections that match them, and TCP sequence adjustment (see :doc:`nat`)."),
)
# Profiles in the order a rule's source link prefers them: the newest
# packaged source first; 6.18's source is not packaged here.
_LINK_PROFILE_ORDER = ("6.1.192", "6.1.176", "6.1.170", "6.18")
ELIXIR = "https://elixir.bootlin.com/linux"


def rule_group(rule_id: str) -> str:
    """The title of the group a rule id belongs to (by its prefix)."""
    prefix = rule_id.split(".", 1)[0]
    for title, prefixes, _ in RULE_GROUPS:
        if prefix in prefixes:
            return title
    raise ValueError(f"rule {rule_id}: no group for the prefix {prefix!r} (docs/sphinxext.py RULE_GROUPS)")


def rule_anchor(rule_id: str) -> str:
    """The HTML id of a rule's row: ``rule-`` and the id itself (``rule-register.unbind``)."""
    return f"rule-{rule_id}"


def kernel_tag(profile: str) -> str:
    """The Elixir tag of a profile's kernel source: ``v6.1.192``; ``v6.18`` for 6.18."""
    return f"v{profile}"


def source_url(profile: str, file: str = "nf_conntrack_sip.c") -> str:
    return f"{ELIXIR}/{kernel_tag(profile)}/source/net/netfilter/{file}"


def ident_url(profile: str, ident: str) -> str:
    return f"{ELIXIR}/{kernel_tag(profile)}/A/ident/{ident}"


def rule_profiles(rule) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    from sipct.spec.profiles import PROFILES

    return tuple(rule.only_profiles) or tuple(PROFILES)


def link_profile(rule) -> str:  # type: ignore[no-untyped-def]
    """The profile whose source a rule's kernel function links to."""
    profiles = rule_profiles(rule)
    return next(p for p in _LINK_PROFILE_ORDER if p in profiles)


_IDENT = re.compile(r"_*[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
_FUNCTION_TOKEN = re.compile(r"(?P<file>[a-z_]+\.c)|(?P<alts>_*[a-z][a-z0-9_]*(?:/[a-z0-9_]+)+)|(?P<ident>_*[a-z][a-z0-9_]*)"
                             r"|(?P<arrow> -> )|(?P<other>.)")


def function_parts(text: str) -> list[tuple[str, str, str | None]]:
    """A rule's ``function`` as (kind, shown text, target) parts: ``file``
    (a source file), ``ident`` (a kernel identifier; target: the identifier),
    ``text``. ``process_invite/update/prack_response`` is three identifiers
    (``process_invite_response``, ...); ``sip_help_udp/sip_help_tcp`` two."""
    parts: list[tuple[str, str, str | None]] = []

    def text_part(t: str) -> None:
        if parts and parts[-1][0] == "text":
            parts[-1] = ("text", parts[-1][1] + t, None)
        else:
            parts.append(("text", t, None))

    for m in _FUNCTION_TOKEN.finditer(text):
        if m.group("file"):
            parts.append(("file", m.group("file"), m.group("file")))
        elif m.group("alts"):
            pieces = m.group("alts").split("/")
            if all(_IDENT.fullmatch(p) for p in pieces):
                targets = pieces
            else:  # a shared prefix and suffix: process_invite/update/prack_response
                prefix = pieces[0].rsplit("_", 1)[0] + "_"
                suffix = "_" + pieces[-1].split("_", 1)[1]
                targets = [pieces[0] + suffix, *(prefix + p + suffix for p in pieces[1:-1]), prefix + pieces[-1]]
            for i, (shown, target) in enumerate(zip(pieces, targets)):
                if i:
                    text_part("/")
                parts.append(("ident", shown, target))
        elif m.group("ident"):
            word = m.group("ident")
            if _IDENT.fullmatch(word):
                parts.append(("ident", word, word))
            else:
                text_part(word)
        elif m.group("arrow"):
            text_part(" → ")
        else:
            text_part(m.group("other"))
    return parts


def _param_text(name: str, value: object) -> str:
    return f"{name}={int(value) if isinstance(value, bool) else value}"


def _cell(*children: nodes.Node) -> nodes.entry:
    entry = nodes.entry()
    entry += nodes.paragraph("", "", *children)
    return entry


class RulesDirective(Directive):
    """``.. sipct-rules::`` - the catalogue, one section per group, one table
    row per rule with the anchor ``rule-<id>``."""

    def run(self) -> list[nodes.Node]:
        from sipct.spec.profiles import PROFILES
        from sipct.spec.rules import RULES

        env = self.state.document.settings.env
        domain = env.get_domain("sipct")
        groups: dict[str, list] = {title: [] for title, _, _ in RULE_GROUPS}
        for rule in RULES.values():
            groups[rule_group(rule.id)].append(rule)
        sources = nodes.paragraph("", "Kernel functions link to Elixir's identifier search in the source of "
                                  f"{kernel_tag(_LINK_PROFILE_ORDER[0])}, or of the newest profile the rule applies "
                                  "to when that is not one. ``nf_conntrack_sip.c`` of each profile: ")
        for i, name in enumerate(PROFILES):
            if i:
                sources += nodes.Text(", ")
            sources += nodes.reference("", name, refuri=source_url(name))
        sources += nodes.Text(".")
        out: list[nodes.Node] = [sources]
        for title, _, intro in RULE_GROUPS:
            rules = groups[title]
            if not rules:
                continue
            section = nodes.section(ids=[nodes.make_id("rules " + title)], names=[nodes.fully_normalize_name(title)])
            section += nodes.title(title, title)
            intro_nodes, _ = self.state.inline_text(intro, self.lineno)
            section += nodes.paragraph("", "", *intro_nodes)
            section += self._table(rules, len(PROFILES))
            self.state.document.note_implicit_target(section, section)
            out.append(section)
            for rule in rules:
                domain.note_rule(rule.id, env.docname, rule_anchor(rule.id), self.lineno)
        return out

    def _table(self, rules: list, profile_count: int) -> nodes.table:  # type: ignore[type-arg]
        table = nodes.table(classes=["sipct-rules"])
        widths = (18, 44, 9, 17, 12)
        tgroup = nodes.tgroup(cols=len(widths))
        table += tgroup
        for w in widths:
            tgroup += nodes.colspec(colwidth=w)
        head = nodes.thead()
        tgroup += head
        row = nodes.row()
        for text in ("rule", "behaviour", "verdict", "kernel function", "applies to"):
            row += _cell(nodes.Text(text))
        head += row
        body = nodes.tbody()
        tgroup += body
        for rule in rules:
            body += self._row(rule, profile_count)
        return table

    def _row(self, rule, profile_count: int) -> nodes.row:  # type: ignore[no-untyped-def]
        anchor = rule_anchor(rule.id)
        row = nodes.row(ids=[anchor])
        row += _cell(nodes.reference("", "", nodes.literal(rule.id, rule.id), refid=anchor,
                                     classes=["sipct-rule-anchor"]))
        behaviour = nodes.entry()
        behaviour += nodes.paragraph("", rule.summary)
        if rule.log:
            behaviour += nodes.paragraph("", "", nodes.Text("Kernel log: "), nodes.literal(rule.log, rule.log))
        if rule.needs:
            behaviour += nodes.paragraph("", "", nodes.emphasis("", "Exercised only with: "), nodes.Text(rule.needs))
        row += behaviour
        row += _cell(nodes.literal("NF_DROP", "NF_DROP") if rule.drop else nodes.Text("—"))
        profile = link_profile(rule)
        function = nodes.paragraph()
        for kind, shown, target in function_parts(rule.function):
            if kind == "text":
                function += nodes.Text(shown)
            else:
                uri = source_url(profile, target) if kind == "file" else ident_url(profile, target)
                function += nodes.reference("", "", nodes.literal(shown, shown), refuri=uri)
        entry = nodes.entry()
        entry += function
        row += entry
        applies = nodes.entry()
        profiles = rule_profiles(rule)
        applies += nodes.paragraph("", "all profiles" if len(profiles) == profile_count and not rule.only_profiles
                                   else ", ".join(profiles) + (" only" if len(profiles) == 1 else ""))
        if rule.needs_params:
            para = nodes.paragraph()
            for i, (name, value) in enumerate(rule.needs_params):
                if i:
                    para += nodes.Text(", ")
                text = _param_text(name, value)
                para += nodes.literal(text, text)
            applies += para
        row += applies
        return row


def rule_role(name, rawtext, text, lineno, inliner, options=None, content=None):  # type: ignore[no-untyped-def]
    """``:rule:`register.unbind``` - a link to the rule's row in the
    catalogue; an id that is not in ``RULES`` is a build error."""
    from sipct.spec.rules import RULES

    rule_id = text.strip()
    if rule_id not in RULES:
        msg = inliner.reporter.error(f"unknown rule id {rule_id!r} (not in sipct.spec.rules.RULES)", line=lineno)
        problem = inliner.problematic(rawtext, rawtext, msg)
        return [problem], [msg]
    node = addnodes.pending_xref(rawtext, refdomain="sipct", reftype="rule", reftarget=rule_id,
                                 refexplicit=False, refwarn=True)
    node += nodes.literal(rawtext, rule_id, classes=["xref", "sipct-rule"])
    return [node], []


class SipctDomain(Domain):
    """Holds where each rule's row is, so that ``:rule:`` links resolve across pages."""

    name = "sipct"
    label = "sipct"
    object_types = {"rule": ObjType("rule", "rule")}
    initial_data: dict = {"rules": {}}  # rule id -> (docname, anchor)

    @property
    def rules(self) -> dict[str, tuple[str, str]]:
        return self.data["rules"]

    def note_rule(self, rule_id: str, docname: str, anchor: str, line: int) -> None:
        if rule_id in self.rules and self.rules[rule_id][0] != docname:
            logger.warning("rule %s is in the catalogue twice (%s and %s)", rule_id, self.rules[rule_id][0], docname,
                           location=(docname, line))
        self.rules[rule_id] = (docname, anchor)

    def clear_doc(self, docname: str) -> None:
        for rule_id, (doc, _) in list(self.rules.items()):
            if doc == docname:
                del self.rules[rule_id]

    def merge_domaindata(self, docnames, otherdata) -> None:  # type: ignore[no-untyped-def]
        for rule_id, (doc, anchor) in otherdata["rules"].items():
            if doc in docnames:
                self.rules[rule_id] = (doc, anchor)

    def resolve_xref(self, env, fromdocname, builder, typ, target, node, contnode):  # type: ignore[no-untyped-def]
        found = self.rules.get(target)
        if found is None:
            return None
        docname, anchor = found
        return make_refnode(builder, fromdocname, docname, anchor, contnode, f"rule {target}")

    def resolve_any_xref(self, env, fromdocname, builder, target, node, contnode):  # type: ignore[no-untyped-def]
        ref = self.resolve_xref(env, fromdocname, builder, "rule", target, node, contnode)
        return [("sipct:rule", ref)] if ref is not None else []

    def get_objects(self):  # type: ignore[no-untyped-def]
        for rule_id, (docname, anchor) in self.rules.items():
            yield rule_id, rule_id, "rule", docname, anchor, 1


class LadderDirective(_Generated):
    """A dialog file (a path from the repository root) as the spec predicts
    it: the ladder (sipct.explain.ladder, the renderer of ``sipct explain
    --html``), then a table per step - verdict, rules (linked to the
    catalogue), the expectation table after the step - with a column for
    every profile whose prediction of some step differs from the default's."""

    required_arguments = 1

    def render(self) -> list[str]:
        from sipct.explain.ladder import ladder_svg
        from sipct.harness.wire import LAB_WIRE
        from sipct.spec.dialog import load_dialog
        from sipct.spec.predict import predict
        from sipct.spec.profiles import DEFAULT_PROFILE, PROFILES

        env = self.state.document.settings.env
        path = Path(env.srcdir).parent / self.arguments[0]
        env.note_dependency(str(path))
        dialog = load_dialog(path)
        base = predict(dialog, DEFAULT_PROFILE, wire=LAB_WIRE)
        others = {name: predict(dialog, profile, wire=LAB_WIRE) for name, profile in PROFILES.items()
                  if profile is not DEFAULT_PROFILE}
        differ = [name for name, p in others.items()
                  if any(_step_outcome(dialog, a) != _step_outcome(dialog, b) for a, b in zip(base.steps, p.steps))]
        out = [".. raw:: html", "", '   <div class="sipct-ladder" style="overflow-x:auto">']
        out += ["   " + line for line in ladder_svg(base).splitlines()]
        out += ["   </div>", ""]
        out.append(f"``{self.arguments[0]}``, predicted for profile ``{DEFAULT_PROFILE.name}``"
                   + (f"; profiles that predict otherwise: {', '.join(f'``{n}``' for n in differ)}." if differ
                      else "; every profile predicts the same."))
        out.append("")
        header = ["#", "step", "verdict", "rules", "machines", "expectations after the step"] + [
            f"``{n}``" for n in differ]
        rows = []
        for s in base.steps:
            verdict, table = _step_outcome(dialog, s)
            rules = " ".join(f":rule:`{r}`" for r in dict.fromkeys(f.rule.id for f in s.firings)) or "-"
            machines = "; ".join(f"{m.removesuffix('Machine')}: ``{src} --{label}-->``"
                                 for m, src, label in s.transitions) or "-"
            step = _literal(describe(dialog, s.step, base.wire))
            row = [str(s.index), f"``{step}``", verdict or "-", rules, machines,
                   " ".join(f"``{_literal(e)}``" for e in table) or "-"]
            for name in differ:
                other = _step_outcome(dialog, others[name].steps[s.index])
                row.append("as the default" if other == (verdict, table) else
                           f"{other[0] or '-'}: " + (" ".join(f"``{_literal(e)}``" for e in other[1]) or "no expectation"))
            rows.append(row)
        widths = " ".join(["4", "20", "7", "20", "26", "23"] + ["16"] * len(differ))
        return out + _table(header, rows, widths)


def _step_outcome(dialog, step) -> tuple:  # type: ignore[no-untyped-def]
    """What a reader compares between profiles: the verdict and the table."""
    return (step.verdict, tuple(f"{dialog.symbolic(e)} ({e.remaining(step.time):.0f} s)" for e in step.expectations))


def describe(dialog, step, wire) -> str:  # type: ignore[no-untyped-def]
    from sipct.spec.report import describe_step

    return describe_step(dialog, step, wire=wire)


def _literal(text: str) -> str:
    """Text for an inline literal: no backquotes, control characters escaped."""
    from sipct.spec.printable import printable

    return printable(text).replace("`", "'").replace("\n", " ")


class ProfilesDirective(_Generated):
    def render(self) -> list[str]:
        from sipct.spec.profiles import PROFILES, KernelProfile

        features = KernelProfile.feature_names()
        rows = [[f"``{p.name}``", p.description, *("yes" if getattr(p, f) else "no" for f in features)]
                for p in PROFILES.values()]
        return _table(["profile", "kernels", *[f"``{f}``" for f in features]], rows)


def modprobe_value(name: str, value: object) -> str:
    """A parameter as ``modprobe nf_conntrack_sip`` takes it: ``ports=5060,5062``, switches as 0/1."""
    if isinstance(value, (tuple, list)):
        return f"{name}={','.join(str(v) for v in value)}"
    return f"{name}={int(value) if isinstance(value, bool) else value}"


class ParamsDirective(_Generated):
    def render(self) -> list[str]:
        from sipct.spec.params import ModuleParams

        defaults = ModuleParams()
        module = [f.name for f in fields(ModuleParams) if f.name != "expect_max"]
        command = "modprobe nf_conntrack_sip " + " ".join(modprobe_value(n, getattr(defaults, n)) for n in module)
        intro = ["The defaults, written as ``modprobe`` takes them (a line ``options nf_conntrack_sip ...`` in "
                 "``/etc/modprobe.d/`` does the same at every load):", "", ".. code-block:: sh", "",
                 f"   {command}", ""]
        docs = {
            "ports": "Destination ports that get the helper (the lab's ``ct helper set`` rule); up to 8.",
            "sip_timeout": "Seconds a master lives after its last packet with payload.",
            "sip_direct_signalling": "REGISTER expectations accept only the registrar as source.",
            "sip_direct_media": "Media expectations only for the sender's own address, from the peer.",
            "sip_external_media": "With direct media off: no expectation for media reachable through "
                                  "the signalling packet's output interface.",
            "expect_max": "``nf_conntrack_expect_max``: the namespace's expectation limit.",
        }
        rows = []
        for f in fields(ModuleParams):
            value = getattr(defaults, f.name)
            if f.name == "expect_max":
                written = f"``sysctl -w net.netfilter.nf_conntrack_expect_max={value}`` (not a module parameter)"
            else:
                written = f"``{modprobe_value(f.name, value)}``"
            rows.append([f"``{f.name}``", written, docs.get(f.name, "")])
        return intro + _table(["parameter", "default, as written", "meaning"], rows, "22 33 45")


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
    app.setup_extension("sphinx.ext.autodoc")
    app.setup_extension("sphinx.ext.graphviz")
    app.connect("autodoc-process-signature", _unquote_annotations)
    app.add_domain(SipctDomain)
    app.add_role("rule", rule_role)
    app.add_directive("sipct-machine", MachineDirective)
    app.add_directive("sipct-module-doc", ModuleDocDirective)
    app.add_directive("sipct-rules", RulesDirective)
    app.add_directive("sipct-ladder", LadderDirective)
    app.add_directive("sipct-profiles", ProfilesDirective)
    app.add_directive("sipct-params", ParamsDirective)
    app.add_directive("sipct-policy", PolicyDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
