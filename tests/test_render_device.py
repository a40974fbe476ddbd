"""Render device choice: the pure rule fed the device lists Cycles reports on
each pod kind, and the real bpy path on this CPU-only machine."""
from __future__ import annotations

import pytest

from pod_setup.job_errors import EXIT_RENDER, JobFailed
from pod_setup.render_device import Device, choose_device
from tests.test_pod_render_job import run_job

CPU = Device("CPU", "AMD EPYC 9654", "CPU")
CUDA_CARDS = [Device("CUDA", "NVIDIA H100 80GB HBM3", "CUDA_0"), Device("CUDA", "NVIDIA H100 80GB HBM3", "CUDA_1")]
OPTIX_CARDS = [Device("OPTIX", "NVIDIA H100 80GB HBM3", "OPTIX_0"), Device("OPTIX", "NVIDIA H100 80GB HBM3", "OPTIX_1")]


def test_cpu_only_list():
    auto = choose_device([CPU], "auto")
    assert auto.kind == "CPU" and auto.names == ("AMD EPYC 9654",)
    assert "no GPU found" in auto.warning and "CPU AMD EPYC 9654" in auto.warning
    assert choose_device([CPU], "cpu").warning == ""
    with pytest.raises(JobFailed) as failure:
        choose_device([CPU], "gpu")
    assert failure.value.code == EXIT_RENDER and "finds no GPU" in str(failure.value)


def test_cuda_and_cpu_picks_every_cuda_card():
    choice = choose_device([CPU, *CUDA_CARDS], "auto")
    assert choice.kind == "CUDA" and choice.ids == ("CUDA_0", "CUDA_1") and not choice.warning
    assert choice.to_manifest() == {"kind": "CUDA", "names": ["NVIDIA H100 80GB HBM3"] * 2}
    assert choose_device([CPU, *CUDA_CARDS], "gpu").kind == "CUDA"
    assert choose_device([CPU, *CUDA_CARDS], "cpu").kind == "CPU"


def test_optix_wins_over_cuda_whatever_the_order():
    assert choose_device([*CUDA_CARDS, CPU, *OPTIX_CARDS], "auto").ids == ("OPTIX_0", "OPTIX_1")
    amd = [Device("HIP", "AMD Radeon PRO W7900", "HIP_0"), Device("ONEAPI", "Intel Arc A770", "ONEAPI_0")]
    assert choose_device([CPU, *amd], "gpu").kind == "HIP"
    assert choose_device([CPU, amd[1]], "gpu").kind == "ONEAPI"


def test_gpu_on_this_cpu_machine_fails_before_any_ai_request(tmp_path, sample_scene, stability_server):
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, render_device="gpu")
    assert completed.returncode == EXIT_RENDER
    lines = [line for line in completed.stderr.splitlines() if line.startswith("render_job:")]
    assert len(lines) == 1 and "render_device gpu: Cycles finds no GPU" in lines[0]
    assert stability_server.requests == [] and not (tmp_path / "out" / "render.png").exists()
    assert manifest["status"] == "failed" and "no GPU" in manifest["error"]


def test_auto_renders_on_the_cpu_and_says_so(tmp_path, sample_scene, stability_server):
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, backend="none", key=None)
    assert completed.returncode == 0, completed.stderr
    assert manifest["render_device"]["kind"] == "CPU" and manifest["render_device"]["names"]
    assert "rendering on the CPU" in manifest["render_device"]["warning"]
    assert any("rendering on the CPU" in w for w in manifest["warnings"])
    assert "render_job: warning: no GPU found" in completed.stderr
    assert manifest["render_engine"] == "CYCLES"


def test_cpu_mode_records_the_cpu_without_a_warning(tmp_path, sample_scene, stability_server):
    completed, manifest = run_job(tmp_path, sample_scene, stability_server, backend="none", key=None,
                                  render_device="cpu")
    assert completed.returncode == 0, completed.stderr
    assert "warning" not in manifest["render_device"] and "warnings" not in manifest


def test_device_summary_of_a_pod_manifest_is_short_plain_text():
    from remote.core.pod_output import device_summary

    assert device_summary({"render_device": {"kind": "OPTIX", "names": ["H100", "H100", "A40"]}}) == "OPTIX: H100 x2, A40"
    assert device_summary({"render_device": {"kind": "CPU", "names": ["EPYC"], "warning": "no GPU"}}) == "CPU: EPYC (fallback)"
    assert device_summary({}) == "" and device_summary({"render_device": "GPU"}) == ""
    hostile = device_summary({"render_device": {"kind": "CUDA", "names": ["\x1b[2Jevil\n" * 100, 7]}})
    assert "\x1b" not in hostile and "\n" not in hostile and len(hostile) <= 120


def test_eevee_without_a_gpu_says_why_instead_of_crashing(tmp_path, sample_scene, stability_server):
    import subprocess
    import sys

    scene = tmp_path / "eevee.blend"
    subprocess.run([sys.executable, "-c", "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
                    "bpy.context.scene.render.engine = 'BLENDER_EEVEE'; bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])",
                    str(sample_scene), str(scene)], check=True, capture_output=True, timeout=120)
    completed, manifest = run_job(tmp_path, scene, stability_server)
    assert completed.returncode == EXIT_RENDER
    assert "render engine BLENDER_EEVEE needs a GPU" in manifest["error"] and "switch the scene to Cycles" in manifest["error"]
    assert stability_server.requests == [] and not (tmp_path / "out" / "render.png").exists()
