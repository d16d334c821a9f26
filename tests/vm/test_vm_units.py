"""The VM runner's pieces that need no VM: images, parameters, grouping, the guest script."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sipct.harness.vm import run_in_vm
from sipct.harness.vmboot import timeout_for
from sipct.harness.vmkernels import VmError, VmKernel, read_image_banner
from sipct.harness.vmstage import format_params, group_by_module_params, module_params_for
from sipct.spec.dialog import load_dialog
from sipct.cli.main import examples_dir

DIALOGS = Path(__file__).parent / "dialogs"
BANNER = "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)"


def fake_bzimage(path: Path, banner: str = BANNER) -> Path:
    data = bytearray(0x400)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x300 - 0x200)
    data[0x300:0x300 + len(banner)] = banner.encode()
    path.write_bytes(bytes(data))
    return path


def fake_modules(root: Path, release: str, sip: bool = True) -> None:
    d = root / release
    (d / "kernel/net/netfilter").mkdir(parents=True)
    (d / "modules.dep").write_text("")
    if sip:
        (d / "kernel/net/netfilter/nf_conntrack_sip.ko.xz").write_bytes(b"")


def test_the_image_banner_gives_release_and_debian_version(tmp_path):
    fake_modules(tmp_path / "modules", "6.1.0-56-amd64")
    k = VmKernel.from_path(fake_bzimage(tmp_path / "vmlinuz-6.1.0-56-amd64"), modules_root=tmp_path / "modules")
    assert read_image_banner(k.vmlinuz) == BANNER
    assert (k.release, k.version, k.package_version) == ("6.1.0-56-amd64", "6.1.192", "6.1.192-2")
    assert str(k) == "6.1.0-56-amd64 (Debian 6.1.192-2)"


def test_missing_modules_name_the_package(tmp_path):
    image = fake_bzimage(tmp_path / "vmlinuz-6.1.0-56-amd64")
    with pytest.raises(VmError, match=r"no modules in .*6\.1\.0-56-amd64.*linux-image-6\.1\.0-56-amd64"):
        VmKernel.from_path(image, modules_root=tmp_path / "modules")
    fake_modules(tmp_path / "modules", "6.1.0-56-amd64", sip=False)
    with pytest.raises(VmError, match="no nf_conntrack_sip module"):
        VmKernel.from_path(image, modules_root=tmp_path / "modules")


def test_a_file_that_is_no_kernel_is_refused(tmp_path):
    (tmp_path / "vmlinuz-x").write_text("not a kernel")
    with pytest.raises(VmError, match="not an x86 bzImage"):
        VmKernel.from_path(tmp_path / "vmlinuz-x")


def test_a_missing_release_names_the_package():
    with pytest.raises(VmError, match=r"apt-get install --no-install-recommends linux-image-9\.9\.9-nope"):
        run_in_vm("9.9.9-nope", [], timeout=1)


def test_module_parameters_are_checked():
    assert format_params({"sip_direct_media": 0, "ports": [5060, 5062], "sip_timeout": 60}) == [
        "sip_direct_media=0", "ports=5060,5062", "sip_timeout=60"]
    with pytest.raises(VmError, match="unknown nf_conntrack_sip parameter"):
        format_params({"direct_media": 0})
    with pytest.raises(VmError, match="expected a number"):
        format_params({"sip_timeout": "1; reboot"})


def test_dialogs_are_grouped_by_their_load_time_parameters():
    register = load_dialog(examples_dir() / "register.yaml")
    invite = load_dialog(examples_dir() / "invite-audio-video.yaml")
    off = load_dialog(DIALOGS / "invite-third-party-media-direct-media-off.yaml")
    assert module_params_for(register.params) == {}
    assert module_params_for(off.params) == {"sip_direct_media": 0}
    groups = group_by_module_params([register, off, invite])
    assert [(p, [d.name for d in ds]) for p, ds in groups] == [
        ({}, ["register", "invite-audio-video"]),
        ({"sip_direct_media": 0}, ["invite-third-party-media-direct-media-off"]),
    ]
    assert timeout_for([register]) > timeout_for([invite])  # register waits 5 s


def _fake_kernel(boot: Path, modules: Path, release: str, version: str) -> None:
    fake_modules(modules, release)
    fake_bzimage(boot / f"vmlinuz-{release}", BANNER.replace("6.1.0-56-amd64", release).replace("6.1.192-2", version))


def test_kernel_presets(tmp_path):
    from sipct.harness.vmkernels import installed_kernels, kernel_preset

    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    with pytest.raises(VmError, match="no bootable kernel"):
        kernel_preset("all-installed", boot, modules_root=modules)
    for release, version in [("6.1.0-56-amd64", "6.1.192-2"), ("6.12.9+deb12-amd64", "6.12.9-1"),
                             ("6.12.117+deb12-amd64", "6.12.117-1"), ("6.1.0-47-amd64", "6.1.170-3")]:
        _fake_kernel(boot, modules, release, version)
    fake_bzimage(boot / "vmlinuz-6.1.0-99-amd64", BANNER.replace("6.1.0-56", "6.1.0-99"))  # no modules here
    assert [k.version for k in installed_kernels(boot, modules_root=modules)] == [
        "6.1.170", "6.1.192", "6.12.9", "6.12.117"]
    assert [k.release for k in kernel_preset("debian", boot, modules_root=modules)] == [
        "6.1.0-47-amd64", "6.1.0-56-amd64", "6.12.117+deb12-amd64"]
    (boot / "vmlinuz-6.1.0-47-amd64").unlink()
    with pytest.raises(VmError, match=r"linux-image-6\.1\.0-47-amd64"):
        kernel_preset("debian", boot, modules_root=modules)
    with pytest.raises(VmError, match="unknown kernel preset"):
        kernel_preset("newest", boot, modules_root=modules)


def test_inputs_are_staged_and_mapped_back(tmp_path):
    from sipct.harness.vmboot import VmResult
    from sipct.harness.vmstage import stage_input

    source = tmp_path / "generated"
    source.mkdir()
    (source / "a.yaml").write_text("x")
    share = tmp_path / "share"
    share.mkdir()
    sources = stage_input(source, share / "in", "generated")
    assert (share / "in" / "generated" / "a.yaml").read_text() == "x"
    result = VmResult(VmKernel(Path("/boot/x"), "r", "b", Path("/m")), {}, 0, None, "", "", "", "", {}, [], 0, 0,
                      sources=sources)
    assert result.host_path("in/generated/a.yaml") == str(source / "a.yaml")
    assert result.host_path(str(share / "in" / "generated" / "a.yaml")) == str(source / "a.yaml")
    assert result.host_path("/elsewhere/b.yaml") == "/elsewhere/b.yaml"
    with pytest.raises(VmError, match="plain file name"):
        stage_input(source, share / "in", "../x")
    with pytest.raises(VmError, match="no file or folder"):
        stage_input(tmp_path / "missing", share / "in", "m")


def staged_boot(tmp_path, monkeypatch, *argv, **kwargs) -> dict:
    """run_in_vm() up to the boot, against a fake kernel: what it handed the
    boot (the guest script, the modprobe parameters, the JSON file, the staged
    inputs)."""
    import sipct.harness.vm as vm

    fake_modules(tmp_path / "modules", "6.1.0-56-amd64")
    kernel = VmKernel.from_path(fake_bzimage(tmp_path / "vmlinuz-6.1.0-56-amd64"), modules_root=tmp_path / "modules")
    seen = {}

    def boot(kernel, command, workdir, share, timeout, boot_timeout, params, json_file=None, cancel=None):
        seen.update(script=(share / "guest.sh").read_text(), params=params, json_file=json_file,
                    staged=sorted(p.name for p in (share / "in").iterdir()) if (share / "in").exists() else [])
        raise VmError("stop here")

    monkeypatch.setattr(vm, "find_vng", lambda: Path("/usr/bin/true"))
    monkeypatch.setattr(vm, "boot_guest", boot)
    with pytest.raises(VmError, match="stop here"):
        run_in_vm(kernel, list(argv), **kwargs)
    return seen


def test_the_guest_runs_the_command_asked_for(tmp_path, monkeypatch):
    (tmp_path / "gen").mkdir()
    seen = staged_boot(tmp_path, monkeypatch, "--dialog-files", "in/generated", "--json", "report.json",
                       command=("conformance",), inputs={"generated": tmp_path / "gen"}, json_file="report.json")
    assert " conformance --dialog-files in/generated --json report.json > \"$R/result.json\"" in seen["script"]
    assert seen["json_file"] == "report.json" and seen["staged"] == ["generated"]


def test_outputs_are_copied_out_also_after_a_failed_boot(tmp_path, monkeypatch):
    import sipct.harness.vm as vm

    fake_modules(tmp_path / "modules", "6.1.0-56-amd64")
    kernel = VmKernel.from_path(fake_bzimage(tmp_path / "vmlinuz-6.1.0-56-amd64"), modules_root=tmp_path / "modules")

    def boot(kernel, command, workdir, share, timeout, boot_timeout, params, json_file=None, cancel=None):
        (share / "out").mkdir()
        (share / "out" / "helper.log").write_text("the daemon's log")
        raise VmError("the guest did not finish")

    monkeypatch.setattr(vm, "find_vng", lambda: Path("/usr/bin/true"))
    monkeypatch.setattr(vm, "boot_guest", boot)
    wanted = {"out/helper.log": tmp_path / "kept" / "a.log", "out/never-written": tmp_path / "kept" / "b"}
    with pytest.raises(VmError, match="did not finish"):
        run_in_vm(kernel, [], outputs=wanted)
    assert (tmp_path / "kept" / "a.log").read_text() == "the daemon's log"
    assert not (tmp_path / "kept" / "b").exists()
    with pytest.raises(ValueError, match="not a path inside the shared folder"):
        run_in_vm(kernel, [], outputs={"../escape": tmp_path / "x"})


def test_the_expectation_table_size_is_a_guest_sysctl(tmp_path, monkeypatch):
    import sipct.harness.vmstage as vmstage
    from sipct.spec.params import ModuleParams

    assert module_params_for(ModuleParams(expect_max=8)) == {"expect_max": 8}
    assert module_params_for(ModuleParams(expect_max=4096)) == {}  # the default: the kernel's own value
    assert format_params({"sip_timeout": 10, "expect_max": 8}) == ["sip_timeout=10"]
    with pytest.raises(VmError, match="expect_max='8; reboot': expected a positive number"):
        vmstage.format_sysctls({"expect_max": "8; reboot"})

    seen = staged_boot(tmp_path, monkeypatch, module_params={"sip_timeout": 10, "expect_max": 8})
    assert seen["params"] == ["sip_timeout=10"]
    script = seen["script"]
    # Written after modprobe (the sysctl exists once nf_conntrack is loaded), read back with the parameters.
    assert script.index("modprobe nf_conntrack_sip sip_timeout=10") < script.index(
        "echo 8 > /proc/sys/net/netfilter/nf_conntrack_expect_max") < script.index(
        'echo "expect_max=$(cat /proc/sys/net/netfilter/nf_conntrack_expect_max)" >> "$R/params"')


def test_the_host_refuses_another_expectation_table_size():
    from sipct.netlink.kernel import RunningKernel
    from sipct.spec.params import ModuleParams
    from sipct.spec.profiles import DEFAULT_PROFILE

    host = RunningKernel("6.18.44", ModuleParams(expect_max=4096), DEFAULT_PROFILE)
    (conflict,) = host.conflicts(ModuleParams(expect_max=8))
    assert conflict.startswith("expect_max=8 (this kernel has 4096;") and "initial namespace" in conflict
    assert host.conflicts(ModuleParams()) == []
    guest = RunningKernel("6.1.0-56-amd64", ModuleParams(expect_max=1024), DEFAULT_PROFILE)
    assert guest.conflicts(ModuleParams()) == []  # a dialog without expect_max takes the kernel's
    assert guest.params_for(ModuleParams(ports=(5062,))).expect_max == 1024


def test_the_guest_gets_the_environment_asked_for(tmp_path, monkeypatch):
    import sipct.harness.vmstage as vmstage
    from sipct.conformance.matrixplan import guest_env

    seen = staged_boot(tmp_path, monkeypatch, env={"SIPCT_SHARED": "/srv/shared corpus"})
    script = seen["script"]
    assert "export SIPCT_SHARED='/srv/shared corpus'" in script
    assert script.index("export SIPCT_SHARED") < script.index(" run --json")
    with pytest.raises(VmError, match="no variable name"):
        vmstage.format_exports({"A;reboot": "x"})

    # The matrix hands the guest the host's corpus: a copied package finds none by its own location.
    shared = tmp_path / "shared"
    (shared / "corpora" / "rfc4475").mkdir(parents=True)
    monkeypatch.setenv("SIPCT_SHARED", str(shared))
    assert guest_env() == {"SIPCT_SHARED": str(shared.resolve())}


def test_a_cancelled_boot_ends_its_process_group(tmp_path):
    """--jobs: the main thread, interrupted, sets the event; the boot's own thread ends QEMU."""
    import threading
    import time
    from types import SimpleNamespace

    import sipct.harness.vmboot as vmboot

    cancel = threading.Event()
    share = tmp_path / "share"
    share.mkdir()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(VmError, match="cancelled"):
        vmboot.boot_guest(SimpleNamespace(release="test"), ["sleep", "60"], tmp_path, share, 120.0, 120.0, [], None,
                          cancel)
    assert time.monotonic() - started < 15
