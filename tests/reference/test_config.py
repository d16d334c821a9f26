"""The helper's configuration file: defaults, every key, and errors that name the key and line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sipct.cli.main import main
from sipct.reference.config import KEYS, ConfigError, HelperConfig, load_config, parse_config
from sipct.spec.params import ModuleParams

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "reference" / "examples" / "sipct-helper.toml"


def test_the_example_is_the_defaults() -> None:
    config = load_config(EXAMPLE)
    defaults = parse_config("")
    for name in ("name", "families", "transports", "queue", "tcp_queue", "queue_maxlen", "fail_policy", "profile",
                 "resync_interval", "params", "expect_max_auto", "log_level"):
        assert getattr(config, name) == getattr(defaults, name) == getattr(HelperConfig(), name), name


def test_the_example_and_the_docs_mention_every_key() -> None:
    example = EXAMPLE.read_text()
    docs = (ROOT / "docs" / "reference.rst").read_text()
    for section, keys in KEYS.items():
        assert f"[{section}]" in example
        for key in keys:
            assert key in example, key
            assert f"``{section}.{key}``" in docs, key


def test_every_key() -> None:
    config = parse_config("""
[helper]
name = "sip-lab"
families = ["ipv6"]
transports = ["tcp", "udp"]
queue = 7
tcp_queue = 8
queue_maxlen = 64
fail_policy = "closed"
profile = "6.1.170"
resync_interval = 0

[sip]
ports = [5060, 5070]
sip_timeout = 600
sip_direct_signalling = 0
sip_direct_media = false
sip_external_media = true
expect_max = 128

[log]
level = "debug"
""", "x.toml")
    assert (config.name, config.families, config.transports) == ("sip-lab", (socket.AF_INET6,), (6, 17))
    assert (config.queue, config.tcp_queue, config.queues) == (7, 8, (7, 8))
    assert (config.queue_for(17), config.queue_for(6)) == (7, 8)
    assert (config.queue_maxlen, config.fail_open, config.resync_interval) == (64, False, 0.0)
    assert config.kernel_profile().name == "6.1.170"
    assert config.params == ModuleParams((5060, 5070), 600, False, False, True, 128)
    assert config.module_params() == config.params  # expect_max given: no sysctl read
    assert config.log_level == "debug"


def test_registrations_carry_the_kernel_policies() -> None:
    regs = parse_config('[helper]\nqueue = 2\ntcp_queue = 3\n').registrations()
    assert [(r.l3num, r.l4proto, r.queue_num) for r in regs] == [
        (socket.AF_INET, 17, 2), (socket.AF_INET, 6, 3), (socket.AF_INET6, 17, 2), (socket.AF_INET6, 6, 3)]
    for r in regs:
        # sip_exp_policy[]: max 1/4/4/2, 180 s each; 12 bytes of struct nf_ct_sip_master
        assert [(p.name, p.max_expected, p.timeout) for p in r.policies] == [
            ("signalling", 1, 180), ("audio", 4, 180), ("video", 4, 180), ("image", 2, 180)]
        assert (r.name, r.priv_data_len, r.enabled) == ("sip", 12, True)


def test_workers_are_helpers_of_their_own_on_queues_of_their_own() -> None:
    config = parse_config('[helper]\nname = "sipct"\nqueue = 4\ntcp_queue = 10\nworkers = 3\n')
    workers = config.worker_configs()
    assert [(w.name, w.queue, w.tcp_queue, w.worker_index) for w in workers] == [
        ("sipct-0", 4, 10, 0), ("sipct-1", 5, 11, 1), ("sipct-2", 6, 12, 2)]
    assert config.names == ("sipct-0", "sipct-1", "sipct-2")
    assert config.queues == (4, 5, 6, 10, 11, 12)
    assert workers[1].queues == (5, 11) and workers[1].worker_configs() == [workers[1]]
    regs = config.registrations()
    assert len(regs) == 3 * 2 * 2
    assert {(r.name, r.l4proto, r.queue_num) for r in regs} == {
        (f"sipct-{i}", proto, base + i) for i in range(3) for proto, base in ((17, 4), (6, 10))}
    assert workers[2].registrations() == [r for r in regs if r.name == "sipct-2"]
    # One queue for both transports stays allowed: each worker's UDP and TCP share it.
    shared = parse_config("[helper]\nqueue = 0\ntcp_queue = 0\nworkers = 2\n")
    assert [w.queues for w in shared.worker_configs()] == [(0,), (1,)]
    single = parse_config("")
    assert single.workers == 1 and single.worker(0) is single and single.names == ("sip",)
    with pytest.raises(ValueError):
        workers[0].worker(1)


def test_auto_profile_and_expect_max(monkeypatch, tmp_path) -> None:
    config = parse_config("")
    assert config.kernel_profile("6.1.0-56-amd64").name  # some profile, from the release
    sysctl = tmp_path / "expect_max"
    sysctl.write_text("77\n")
    monkeypatch.setattr("sipct.reference.config.EXPECT_MAX_SYSCTL", sysctl)
    assert config.module_params().expect_max == 77


@pytest.mark.parametrize("text,key,line,words", [
    ("[helper]\nqueue = 70000\n", "helper.queue", 2, "0 to 65535"),
    ("[helper]\n\nfail_policy = \"maybe\"\n", "helper.fail_policy", 3, "'open' or 'closed'"),
    ("[helper]\nfamilies = [\"ipv5\"]\n", "helper.families", 2, "'ipv4', 'ipv6'"),
    ("[helper]\nname = \"a very long helper name\"\n", "helper.name", 2, "letters"),
    ("[helper]\nprofile = \"5.4\"\n", "helper.profile", 2, "6.1.192"),
    ("[helper]\nresync_interval = -1\n", "helper.resync_interval", 2, "seconds"),
    ("[helper]\nqueue = true\n", "helper.queue", 2, "whole number"),
    ("[helper]\nqeueu = 1\n", "helper.qeueu", 2, "unknown key"),
    ("[sip]\nports = [1,2,3,4,5,6,7,8,9]\n", "sip.ports", 2, "1 to 8 ports"),
    ("[sip]\nports = [0]\n", "sip.ports", 2, "not a port number"),
    ("[sip]\nports = \"5060\"\n", "sip.ports", 2, "list of port numbers"),
    ("[sip]\nsip_direct_media = 2\n", "sip.sip_direct_media", 2, "true/false"),
    ("[sip]\nsip_timeout = -5\n", "sip.sip_timeout", 2, "whole number"),
    ("[log]\nlevel = \"loud\"\n", "log.level", 2, "'debug'"),
    ("[helper]\nworkers = 0\n", "helper.workers", 2, "1 to 64"),
    ("[helper]\nname = \"a-longer-helper\"\nworkers = 10\n", "helper.name", 2, "a-longer-helper-9"),
    ("[helper]\nqueue = 65535\nworkers = 2\n", "helper.workers", 3, "go past 65535"),
    ("[helper]\nqueue = 0\ntcp_queue = 1\nworkers = 2\n", "helper.tcp_queue", 3, "overlap"),
    ("[logging]\nlevel = \"info\"\n", None, 1, "unknown section [logging]"),
    ("[helper]\nqueue = \n", None, 2, "not valid TOML"),
    ("helper = 3\n", "[helper]", None, "must be a table"),
])
def test_errors_name_key_and_line(text: str, key: str | None, line: int | None, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/sipct/helper.toml")
    exc = info.value
    assert (exc.key, exc.line) == (key, line)
    assert words in str(exc)
    assert str(exc).startswith("/etc/sipct/helper.toml" + (f":{line}" if line else ""))


def test_cli_exits_2_naming_key_and_line(tmp_path, capsys) -> None:
    bad = tmp_path / "helper.toml"
    bad.write_text("[helper]\nqueue = 1\nfail_policy = \"sometimes\"\n")
    assert main(["helper", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: helper.fail_policy" in err
    assert main(["helper", "--config", str(tmp_path / "missing.toml"), "--check"]) == 2
    assert "cannot read the configuration" in capsys.readouterr().err
