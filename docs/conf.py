"""Sphinx configuration for the sipct specification.

Build it as CI does (warnings are errors, every cross-reference must resolve)::

    .venv/bin/python -m sphinx -W -n -b html docs /tmp/out-docs
"""

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

project = "sipct"
author = "the sipct developers"
copyright = "2026, the sipct developers"


def _git(*args: str) -> str | None:
    """One line of git output for the checkout the docs are built from; None when
    the sources are not a git checkout (an sdist, an unpacked tarball)."""
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _package_version() -> str:
    try:
        return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


release = version = _package_version()
commit = _git("rev-parse", "--short", "HEAD")
if commit is not None and _git("status", "--porcelain", "--untracked-files=no"):
    commit += "-dirty"
commit_date = _git("log", "-1", "--format=%cs") if commit else None
build_id = (f"sipct {release}, commit {commit} ({commit_date})" if commit
            else f"sipct {release} (not built from a git checkout)")

# Every page ends with the version and commit it was built from.
rst_epilog = f"""
.. rst-class:: sipct-build

*{build_id}*
"""

extensions = ["sphinx.ext.autodoc", "sphinx.ext.graphviz", "sipct.docs.sphinxext"]
graphviz_output_format = "svg"
# "::" blocks are output, messages and file lines, not Python.
highlight_language = "text"
exclude_patterns = ["_build", "__pycache__"]
html_theme = "furo"
html_title = f"sipct {release} — the Linux SIP conntrack helper, specified"

# Every :mod:, :class:, :func: and :rule: reference must resolve.
nitpicky = True
# The standard library has no inventory here (the build is offline, so no
# intersphinx): its types in signatures stay unlinked. So do pyroute2's and
# python-statemachine's.
nitpick_ignore_regex = [
    (r"py:.*", r"(os|collections|pathlib|ipaddress|collections\.abc|socket|enum|argparse|subprocess|threading"
               r"|types|typing)\..*"),
    (r"py:.*", r"(Path|IPv4Address|IPv6Address|IntEnum|IntFlag|Enum|Callable|Iterable|Iterator|Mapping"
               r"|Sequence|Counter|Popen|Namespace)"),
    (r"py:.*", r"(pyroute2|statemachine)(\..*)?"),
    (r"py:class", r"StateMachine"),
    # The call types of spec.transitions (Callable aliases) and the table's
    # internal entry, which the API pages do not document.
    (r"py:class", r"(Guard|Action|Entry)"),
    # The NAT path's signatures name the spec's per-packet values (the
    # handlers' context and verdict, a lab network, the NAT part of an
    # expectation, a predicted arrival), documented with their modules' prose.
    (r"py:class", r"(PacketContext|Verdict|Network|ExpectNat|Arrival|sipct\.spec\.predict\.Arrival)"),
    # The walker's type variables: a visitor's connection handle and step outcome.
    (r"py:class", r"sipct\.spec\.walk\.[HR]"),
    # The fields of the netlink values the API pages show: ctnetlink's and
    # nfnetlink_cthelper's nested attributes, one class each.
    (r"py:class", r"sipct\.netlink\.ctexp\.(ExpectTuple|ExpectMask|MasterTuple|ExpectNat)"),
    (r"py:class", r"sipct\.netlink\.cthelper\.ExpectPolicy"),
    # The daemon's two sockets, which NetlinkPort's signature names; what they
    # send and read is sipct.netlink's, documented there.
    (r"py:class", r"sipct\.reference\.netlink\.socket\.(HelperSocket|ExpectationSocket)"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
