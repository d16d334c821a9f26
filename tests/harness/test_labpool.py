"""The lab pool: kernel runs in worker processes, back in submission order."""

import os
import shutil

import pytest

from sipct.cli.main import examples_dir
from sipct.harness.diff import compare
from sipct.harness.labns import LabName, lab_namespaces
from sipct.harness.labpool import LabPool, LabWorkerError, RunTask
from sipct.harness.lab import HostSpec
from sipct.harness.run import DROP_TIMEOUT
from sipct.harness.wire import LAB_WIRE
from sipct.spec.dialog import load_dialog
from sipct.spec.predict import predict

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]


def _task(dialog, kernel, hosts=None):
    params = kernel.params_for(dialog.params)
    prediction = predict(dialog, kernel.profile, params, wire=LAB_WIRE)
    return prediction, RunTask(dialog, params.ports, tuple(s.delivered for s in prediction.steps),
                               tuple(s.arrivals for s in prediction.steps), hosts, DROP_TIMEOUT)


def test_runs_come_back_in_order_with_a_workers_error_in_its_place(kernel):
    dialogs = [load_dialog(examples_dir() / name) for name in
               ("invite-bad-media-port.yaml", "invite-audio-video.yaml", "nat-masquerade-call.yaml", "ipv6-invite.yaml")]
    tasks = [_task(d, kernel) for d in dialogs]
    # A shared lab without the dialog's hosts: DialogRunner refuses it, in the worker.
    _, stranger = _task(dialogs[0], kernel, hosts=(HostSpec("x", ("203.0.113.9",)),))
    with LabPool(2) as pool:
        pids = {proc.pid for proc, _ in pool._workers}
        for i, (_, task) in enumerate(tasks):
            pool.submit(task)
            if i == 1:
                pool.submit(stranger)
        runs = [pool.next_result(), pool.next_result()]
        with pytest.raises(LabWorkerError, match="no host for every address"):
            pool.next_result()
        runs += [pool.next_result(), pool.next_result()]
        assert len(_lab_pids() & pids) == 2  # labs of their own in each worker
    for (prediction, _), run in zip(tasks, runs):
        assert run.dialog == prediction.dialog
        assert compare(prediction, run, kernel.release).agree
    # Each worker closed its labs on the way out.
    assert not _lab_pids() & pids


def _lab_pids():
    return {name.pid for name in map(LabName.parse, lab_namespaces()) if name is not None}
