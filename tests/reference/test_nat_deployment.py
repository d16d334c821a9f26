"""The masquerading firewall of docs/reference-nat.rst, as shipped in
reference/examples/: the rulesets load into a real kernel (a throw-away
network namespace with the interfaces they name), the configuration loads,
the three files agree, and ``sipct helper --check`` reports what a NAT
deployment needs (nf_nat_sip's expectfn, the helper's name)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from sipct.reference.cli import check
from sipct.reference.config import load_config, parse_config
from sipct.reference.natcheck import ABSENT, BUILTIN, LOADABLE, LOADED, KernelFiles, module_state, nat_chains

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "reference" / "examples"
FIREWALL = EXAMPLES / "nftables-nat.conf"
HELPER_NFT = EXAMPLES / "sipct-helper-nat.nft"
CONFIG = EXAMPLES / "sipct-helper-nat.toml"
DEBIAN_MODULES = Path("/lib/modules/6.1.0-56-amd64")  # a Debian 12 kernel's module lists (scripts/setup-kernels.sh)


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True, timeout=30)


@pytest.fixture
def router():
    """A network namespace with the firewall's interfaces, lan0 and wan0 with
    the guide's addresses: the two ends of one veth pair (nothing is sent;
    the rulesets need the names only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("needs `ip` and `nft`")
    name = f"sipct-deploy{os.getpid()}-{secrets.token_hex(3)}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "add", "lan0", "type", "veth", "peer", "name", "wan0")
        for dev, addrs in (("lan0", ("192.0.2.1/24", "2001:db8:0:1::1/64")),
                           ("wan0", ("203.0.113.1/24", "2001:db8:ffff::1/64"))):
            for addr in addrs:
                _run("ip", "-n", name, "addr", "add", addr, "dev", dev)
            _run("ip", "-n", name, "link", "set", dev, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def _nft(netns: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *argv], input=stdin, capture_output=True,
                          text=True, timeout=30)


def _ruleset(netns: str) -> list[dict]:
    proc = _nft(netns, "-j", "list", "ruleset")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["nftables"]


def _chains(items: list[dict]) -> dict[tuple[str, str], dict]:
    return {(c["table"], c["name"]): c for c in (i.get("chain") for i in items) if c}


def _on_this_kernel(helper_nft: str) -> str:
    """The helper's table with its ct helper objects of type "sip", the one
    SIP helper this kernel can give them: nft_ct_helper_obj_init() resolves
    the type when the table loads, and "sipct" exists only once a
    `sipct helper` registered it (nfnetlink_cthelper, absent here)."""
    name = load_config(CONFIG).name
    assert helper_nft.count(f'type "{name}"') == 2
    return helper_nft.replace(f'type "{name}"', 'type "sip"')


def test_the_firewall_and_the_helper_table_load_and_survive_a_reload(router) -> None:
    proc = _nft(router, "-f", str(FIREWALL))
    assert proc.returncode == 0, proc.stderr
    chains = _chains(_ruleset(router))
    forward, post, inp = (chains["firewall", n] for n in ("forward", "postrouting", "input"))
    assert (forward["hook"], forward["policy"], forward["prio"]) == ("forward", "drop", 10)
    assert (inp["hook"], inp["policy"]) == ("input", "drop")
    assert (post["type"], post["hook"], post["prio"]) == ("nat", "postrouting", 100)
    assert nat_chains(router) == ["inet firewall postrouting"]

    proc = _nft(router, "-f", "-", stdin=_on_this_kernel(HELPER_NFT.read_text()))
    if proc.returncode != 0 and "helper" in proc.stderr.lower():
        pytest.skip(f"this kernel has no SIP helper to stand in for sipct: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    helper_forward = _chains(_ruleset(router))["sipct_helper", "forward"]
    assert (helper_forward["hook"], helper_forward["prio"]) == ("forward", 0)  # priority filter

    # `systemctl reload nftables` (nft -f /etc/nftables.conf) keeps the helper's table; loading it again too.
    before = _ruleset(router)
    assert _nft(router, "-f", str(FIREWALL)).returncode == 0
    assert {t["table"]["name"] for t in _ruleset(router) if "table" in t} == {"firewall", "sipct_helper"}
    assert _nft(router, "-f", "-", stdin=_on_this_kernel(HELPER_NFT.read_text())).returncode == 0
    after = _ruleset(router)
    assert len(after) == len(before)


def test_the_helper_table_names_a_helper_that_must_be_registered_first(router) -> None:
    """What ExecStartPost is for: with no helper "sipct" registered the
    kernel refuses the table (nft_ct_helper_obj_init(): ENOENT)."""
    if Path("/sys/module/nfnetlink_cthelper").exists():
        pytest.skip("nfnetlink_cthelper is loaded: a helper \"sipct\" may be registered")
    proc = _nft(router, "-f", str(HELPER_NFT))
    assert proc.returncode != 0
    assert "No such file or directory" in proc.stderr, proc.stderr


def test_the_config_loads_and_agrees_with_the_rulesets() -> None:
    config = load_config(CONFIG)
    assert config.name == "sipct" and config.name != "sip"
    assert config.params.ports == (5060,)
    assert (config.params.sip_direct_signalling, config.params.sip_direct_media) == (True, True)
    defaults = parse_config("")
    assert (config.families, config.transports, config.queue, config.fail_policy) == (
        defaults.families, defaults.transports, defaults.queue, defaults.fail_policy)
    helper_nft, firewall = HELPER_NFT.read_text(), FIREWALL.read_text()
    assert set(re.findall(r'type "([^"]+)" protocol', helper_nft)) == {config.name}
    ports = {int(p) for p in config.params.ports}
    assert {int(p) for p in re.findall(r"dport (\d+)", helper_nft)} == ports
    assert {int(p) for p in re.findall(r"th dport (\d+)", firewall)} == ports
    assert "flush ruleset" not in "\n".join(l for l in firewall.splitlines() if not l.lstrip().startswith("#"))


# --- where --check reads the modules --------------------------------------------------------------


def _kernel(tmp_path: Path, *, loaded: tuple[str, ...] = (), loadable: tuple[str, ...] = ()) -> KernelFiles:
    sys_module, lib = tmp_path / "sys-module", tmp_path / "lib-modules"
    for module in loaded:
        (sys_module / module).mkdir(parents=True)
        (sys_module / module / "initstate").write_text("live\n")
    lib.mkdir(parents=True)
    (lib / "modules.dep").write_text("".join(f"kernel/net/netfilter/{m}.ko.xz: kernel/net/netfilter/nf_nat.ko.xz\n"
                                             for m in loadable))
    (tmp_path / "kallsyms").write_text("ffffffff81fb1d30 T nf_nat_setup_info\n")
    return KernelFiles(sys_module, tmp_path / "kallsyms", lib)


def test_module_state_reads_the_running_kernel() -> None:
    assert module_state("nf_conntrack", "nf_conntrack_in") in (LOADED, BUILTIN)
    assert module_state("sipct_no_such_module", "sipct_no_such_function") == ABSENT


@pytest.mark.skipif(not DEBIAN_MODULES.is_dir(), reason=f"no {DEBIAN_MODULES}")
def test_module_state_reads_a_debian_kernels_lists(tmp_path) -> None:
    files = KernelFiles(tmp_path / "none", tmp_path / "none", DEBIAN_MODULES)
    assert module_state("nf_nat_sip", "nf_nat_sip_expected", files) == LOADABLE
    assert module_state("nfnetlink_cthelper", "nfnl_cthelper_new", files) == LOADABLE
    builtin = Path((DEBIAN_MODULES / "modules.builtin").read_text().split()[0]).name.split(".ko")[0]
    assert module_state(builtin, "-", files) == BUILTIN
    assert module_state("sipct_no_such_module", "-", files) == ABSENT


def test_module_state_loaded_builtin_by_symbol(tmp_path) -> None:
    files = _kernel(tmp_path, loaded=("nf_nat_sip",))
    assert module_state("nf_nat_sip", "nf_nat_sip_expected", files) == LOADED
    assert module_state("nf_nat", "nf_nat_setup_info", files) == BUILTIN  # kallsyms
    (files.sys_module / "nf_conntrack_sip").mkdir()  # built in, with parameters: no initstate
    assert module_state("nf_conntrack_sip", "sip_help_udp", files) == BUILTIN


# --- sipct helper --check behind NAT ---------------------------------------------------------------


def _check(capsys, config_text: str, netns: str, kernel: KernelFiles) -> tuple[int, dict[str, str]]:
    status = check(parse_config(config_text, "helper.toml"), netns, kernel)
    lines = {}
    for line in capsys.readouterr().out.splitlines():
        m = re.match(r"(ok  |FAIL) ([^:]+): (.*)", line)
        if m:
            lines[m.group(2)] = f"{m.group(1).strip()} {m.group(3)}"
    return status, lines


def test_check_fails_a_nat_router_without_nf_nat_sip(router, tmp_path, capsys) -> None:
    assert _nft(router, "-f", str(FIREWALL)).returncode == 0
    status, lines = _check(capsys, CONFIG.read_text(), router, _kernel(tmp_path, loadable=("nf_nat_sip",)))
    assert status == 2
    line = lines["nf_nat_sip"]
    assert line.startswith("FAIL not loaded, but this namespace NATs (nat chain inet firewall postrouting)")
    assert "nat-follow-master" in line and "`modprobe nf_nat_sip`" in line and "/etc/modules-load.d/" in line
    assert "helper.name" not in line  # "sipct" already
    assert "no kernel SIP helper" not in lines

    _, lines = _check(capsys, '[helper]\nname = "sip"\n', router, _kernel(tmp_path / "sip", loadable=("nf_nat_sip",)))
    assert "set helper.name to another name" in lines["nf_nat_sip"]

    _, lines = _check(capsys, CONFIG.read_text(), router, _kernel(tmp_path / "absent"))
    assert "this kernel has no nf_nat_sip (CONFIG_NF_NAT_SIP)" in lines["nf_nat_sip"]


def test_check_passes_nf_nat_sip_when_loaded_or_not_needed(router, tmp_path, capsys) -> None:
    _, lines = _check(capsys, CONFIG.read_text(), router, _kernel(tmp_path / "plain", loadable=("nf_nat_sip",)))
    assert lines["nf_nat_sip"] == "ok not loaded, and no nft nat chain here: needed only behind NAT"

    assert _nft(router, "-f", str(FIREWALL)).returncode == 0
    _, lines = _check(capsys, CONFIG.read_text(), router,
                      _kernel(tmp_path / "nat", loaded=("nf_nat_sip", "nf_conntrack_sip")))
    assert lines["nf_nat_sip"] == 'ok loaded: the expectfn "sip" for NAT expectations is registered'
    assert "no kernel SIP helper" not in lines  # "sipct" runs next to nf_conntrack_sip


def test_check_fails_the_name_sip_next_to_nf_conntrack_sip(router, tmp_path, capsys) -> None:
    status, lines = _check(capsys, "", router, _kernel(tmp_path, loaded=("nf_nat_sip", "nf_conntrack_sip")))
    assert status == 2
    line = lines["no kernel SIP helper"]
    assert line.startswith('FAIL nf_conntrack_sip is loaded and owns the name "sip"')
    assert 'behind NAT: keep both loaded and set helper.name, e.g. "sipct"' in line


def test_without_nf_nat_sip_the_nat_expectations_name_nat_follow_master(tmp_path) -> None:
    """The daemon's choice (natcheck.nat_expectfn) and what it writes: "sip"
    when nf_nat_sip is there, else nf_nat_core's generic expectfn, with a
    warning that says what differs and how to fix it."""
    from sipct.reference.core import ExpectOp
    from sipct.reference.natcheck import FOLLOW_MASTER, nat_expectfn
    from sipct.spec.expectation import ConnTuple, ExpectClass, ExpectFlag, Expectation, ExpectNat, ExpectTuple

    assert nat_expectfn(_kernel(tmp_path / "a", loaded=("nf_nat_sip",))) == ("sip", None)
    fn, why = nat_expectfn(_kernel(tmp_path / "b", loadable=("nf_nat_sip",)))
    assert fn == FOLLOW_MASTER and "modprobe nf_nat_sip" in why and "SDP's address" in why
    fn, why = nat_expectfn(_kernel(tmp_path / "c"))
    assert fn == FOLLOW_MASTER and "CONFIG_NF_NAT_SIP" in why

    inside, pbx, router = (ipaddress.ip_address(a) for a in ("192.0.2.10", "203.0.113.5", "203.0.113.1"))
    master = ConnTuple(inside, pbx, 17, 5060, 5060)
    media = Expectation(ExpectTuple(4, 17, pbx, router, 31600), ExpectClass.AUDIO, ExpectFlag.NONE, master, 180.0,
                        nat=ExpectNat(1, inside, 31600))
    op = ExpectOp("create", media, "ctnetlink", "sdp.expect-media")
    assert op.kernel("sipct").fn == "sip" and op.kernel("sipct", FOLLOW_MASTER).fn == FOLLOW_MASTER
    assert op.kernel("sipct", FOLLOW_MASTER).nat == op.kernel("sipct").nat  # the same NAT part
