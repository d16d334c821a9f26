"""sipct run: real dialogs through the running kernel, compared with the spec."""

import json
import os
import shutil

import pytest

from sipct.cli.main import EXIT_DIVERGED, EXIT_ERROR, EXIT_OK, examples_dir, main
from sipct.harness.diff import compare
from sipct.spec import media
from sipct.spec.dialog import load_dialog, parse_dialog
from sipct.spec.predict import predict
from sipct.harness.wire import LAB_WIRE

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]

EXAMPLES = sorted(examples_dir().glob("*.yaml"))



@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_agrees_with_the_running_kernel(path, kernel, runner):
    dialog = load_dialog(path)
    params = kernel.params_for(dialog.params)
    prediction = predict(dialog, kernel.profile, params, wire=LAB_WIRE)
    comparison = compare(prediction, runner.run(dialog, params.ports, predicted=prediction.steps), kernel.release)
    diverged = [(s.index, v) for s in comparison.steps for v in s.divergences]
    assert comparison.agree, diverged
    assert len(comparison.steps) == len(dialog.steps)


def test_a_dropped_packet_is_observed_as_dropped(kernel, runner):
    dialog = load_dialog(examples_dir() / "invite-bad-media-port.yaml")
    run = runner.run(dialog, (5060,))
    assert run.steps[0].delivered is False
    assert run.steps[0].expectations == ()


def test_delivered_bytes_are_observed(kernel, runner):
    dialog = load_dialog(examples_dir() / "register.yaml")
    run = runner.run(dialog, (5060,))
    assert run.steps[0].delivered is True
    assert run.steps[0].data == dialog.steps[0].payload


def test_an_injected_spec_mistake_is_a_divergence(monkeypatch, capsys):
    # Pretend the kernel processed one media description per message.
    monkeypatch.setattr(media, "MAX_MEDIA", 1)
    status = main(["run", "--json", str(examples_dir() / "invite-audio-video.yaml")])
    assert status == EXIT_DIVERGED
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "sipct.run/1" and data["agree"] is False
    first = data["steps"][0]
    aspects = {d["aspect"] for d in first["divergences"]}
    assert "expectations" in aspects
    assert "ua:7000 video" in json.dumps(first["divergences"])


def test_agreement_exits_0_with_json(capsys):
    assert main(["run", "--json", str(examples_dir() / "ipv6-invite.yaml")]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["agree"] is True and data["kernel"] == os.uname().release


def test_dialog_needing_other_module_parameters_is_not_run(tmp_path, capsys, kernel):
    text = (examples_dir() / "register.yaml").read_text()
    value = 0 if kernel.params.sip_direct_media else 1
    dialog = tmp_path / "other-params.yaml"
    dialog.write_text(text.replace("hosts:", f"params:\n  sip_direct_media: {value}\nhosts:", 1))
    assert main(["run", str(dialog)]) == EXIT_ERROR
    err = capsys.readouterr().err.replace("\n", " ")
    assert "not runnable on this kernel" in err and f"sip_direct_media={value}" in err


def test_other_ports_are_attached_by_the_lab(runner, kernel):
    text = (examples_dir() / "register.yaml").read_text().replace(":5060 ->", ":5080 ->") \
        .replace("-> registrar:5060", "-> registrar:5080").replace("-> ua:5060\n", "-> ua:5080\n")
    dialog = parse_dialog(text.replace("hosts:", "params:\n  ports: [5080]\nhosts:", 1), "ports.yaml")
    params = kernel.params_for(dialog.params)
    assert params.ports == (5080,)
    comparison = compare(predict(dialog, kernel.profile, params, wire=LAB_WIRE), runner.run(dialog, params.ports), "")
    assert comparison.agree
    assert comparison.steps[0].observation.expectations  # the helper did run on port 5080
