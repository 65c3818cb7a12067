"""docker/ and the deployment scripts, checked without a Docker engine, a GPU or TensorRT."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
GPU, CPU = ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cpu"
BUILD_ENGINE, SELFTEST = ROOT / "scripts" / "build_engine.sh", ROOT / "scripts" / "gpu_selftest.sh"
# NGC TensorRT releases (YY.MM) and the TensorRT they carry, as ../shared/notes/tensorrt.md lists them.
NGC_TENSORRT = {"26.06": "11.0", "26.07": "11.1", "26.08": "11.2"}
CFG, CFG_TEXT = configparser.ConfigParser(), (ROOT / "setup.cfg").read_text()
CFG.read_string(CFG_TEXT)
GPU_EXTRA = [r.strip() for r in CFG["options.extras_require"]["gpu"].splitlines() if r.strip()]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comment and blank lines dropped and backslash continuations joined."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        word, _, args = pending.strip().partition(" ")
        out.append((word.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path.name} ends inside a continuation"
    return out


def base_image(path: Path) -> str:
    ins = instructions(path)
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    froms = [a.split()[0] for w, a in ins if w == "FROM"]
    assert len(froms) == 1
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], froms[0])


def pip_installs(path: Path) -> list[str]:
    """What the RUN instructions hand to `pip install` (options left out)."""
    found = []
    for word, args in instructions(path):
        tokens = shlex.split(args.replace(";", " ; ")) if word == "RUN" else []
        for i, tok in enumerate(tokens[:-1]):
            if re.fullmatch(r"(\S*/)?pip3?", tok) and tokens[i + 1] == "install":
                for arg in tokens[i + 2:]:
                    if arg in {"&&", "||", ";", "|"}:
                        break
                    found += [] if arg.startswith("-") else [arg]
    return found


def name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._/-]*", requirement).group(0).lower()


def test_gpu_base_is_a_pinned_tensorrt_release_the_notes_list():
    m = re.fullmatch(r"nvcr\.io/nvidia/tensorrt:(\d\d\.\d\d)-py3", base_image(GPU))
    assert m and m.group(1) in NGC_TENSORRT, base_image(GPU)
    assert f"TensorRT {NGC_TENSORRT[m.group(1)]}," in GPU.read_text()  # the header names what the tag carries


def test_cpu_base_is_a_pinned_python_the_project_supports():
    m = re.fullmatch(r"python:(3\.\d+)(\.\d+)?-slim-[a-z]+", base_image(CPU))
    assert m and m.group(1) in SpecifierSet(CFG["options"]["python_requires"])
    assert f"Programming Language :: Python :: {m.group(1)}\n" in CFG["metadata"]["classifiers"] + "\n"


@pytest.mark.parametrize("path", [GPU, CPU], ids=["gpu", "cpu"])
def test_image_runs_trt_mpq_as_non_root_in_work(path: Path):
    ins = instructions(path)
    assert not re.search(r":latest\b", path.read_text()) and re.fullmatch(r"[\w./-]+:[\w.-]+", base_image(path))
    users = [a for w, a in ins if w == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert json.loads(dict(ins)["ENTRYPOINT"]) == ["trt-mpq"]
    assert dict(ins)["WORKDIR"] == "/work"
    assert "docker build -f docker/" in path.read_text() and "docker run" in path.read_text()


def venvs(path: Path) -> list[str]:
    return [a for w, a in instructions(path) if w == "RUN" and "-m venv" in a]


def test_gpu_image_reuses_the_containers_tensorrt_and_installs_the_rest_of_the_gpu_extra():
    assert venvs(GPU) and all("--system-site-packages" in a for a in venvs(GPU))
    installed, wanted = pip_installs(GPU), [r for r in GPU_EXTRA if name(r) != "tensorrt"]
    assert "/src" in installed and len(wanted) == len(GPU_EXTRA) - 1 >= 1
    assert set(wanted) <= set(installed), installed
    assert not [r for r in installed if name(r).startswith("tensorrt") or re.search(r"\[[^\]]*gpu", r)]


def test_cpu_image_installs_the_project_alone():
    assert venvs(CPU) and not any("--system-site-packages" in a for a in venvs(CPU))
    installed, gpu_names = pip_installs(CPU), {name(r) for r in GPU_EXTRA}
    assert "/src" in installed
    assert not [r for r in installed if name(r) in gpu_names or re.search(r"\[[^\]]*gpu", r)], installed


def test_dockerignore_drops_local_state_but_keeps_what_pip_needs():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = {p.strip().rstrip("/").removeprefix("**/") for p in lines if p.strip() and not p.startswith("#")}
    assert {".venv", ".git", "runs", "__pycache__", "*.egg-info"} <= patterns
    for needed in ["setup.cfg", "pyproject.toml", "README.md", "trt_mpq"]:
        assert not [p for p in patterns if fnmatch.fnmatch(needed, p)], needed


def test_readme_gives_the_commands_and_the_honest_status():
    readme = (ROOT / "docker" / "README.md").read_text()
    assert all(f"docker build -f docker/{p.name} -t " in readme for p in (GPU, CPU))
    assert base_image(GPU) in readme and base_image(CPU) in readme and "--build-arg BASE=" in readme
    assert "have not been built on this project's CI machines" in readme


def bash(*args: str, path: str = "") -> subprocess.CompletedProcess:
    search = [path] if path else []  # an empty PATH entry would mean the current folder
    env = {**os.environ, "TRT_MPQ_NO_INSTALL": "1", "PATH": os.pathsep.join([*search, os.environ["PATH"]])}
    return subprocess.run(["bash", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", [BUILD_ENGINE, SELFTEST], ids=lambda p: p.name)
def test_script_parses_and_is_executable(script: Path):
    assert os.access(script, os.X_OK)
    assert bash("-n", str(script)).returncode == 0


def test_build_engine_checks_its_folder_then_calls_trt_mpq_build(tmp_path: Path):
    (tmp_path / "trt-mpq").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\nexit 3\n')  # a stand-in
    (tmp_path / "trt-mpq").chmod(0o755)
    (tmp_path / "model.mixed.onnx").write_bytes(b"")
    for args, word in [((), "usage"), ((str(tmp_path),), "plan.json")]:
        r = bash(str(BUILD_ENGINE), *args, path=str(tmp_path))
        assert (r.returncode, r.stdout, len(r.stderr.splitlines())) == (2, "", 1) and word in r.stderr
    assert not (tmp_path / "args").exists()
    (tmp_path / "plan.json").write_text("{}")
    assert bash(str(BUILD_ENGINE), str(tmp_path), "--opt-level", "5", path=str(tmp_path)).returncode == 3
    called = (tmp_path / "args").read_text().split()
    assert called == ["build", str(tmp_path), "--backend", "tensorrt", "--opt-level", "5"]


@pytest.mark.parametrize("body, rc, result", [
    ("@pytest.mark.skip(reason='no NVIDIA GPU here')\ndef test_a(): pass", 2, "SKIPPED (no GPU or TensorRT: no NVIDIA"),
    ("def test_a(): pass", 0, "PASS"),
    ("def test_a(): assert False", 1, "FAIL"),
])
def test_gpu_selftest_summary(tmp_path: Path, body: str, rc: int, result: str):
    """A copy of the script runs a stand-in tests/gpu with the current Python (TRT_MPQ_NO_INSTALL=1)."""
    test = f"import pytest\npytestmark = pytest.mark.gpu\n{body}\n"
    for rel, text in [("scripts/s.sh", SELFTEST.read_text()), ("setup.cfg", CFG_TEXT), ("tests/gpu/test_x.py", test)]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    r = bash(str(tmp_path / "scripts" / "s.sh"), path=str(Path(sys.executable).parent))
    assert r.returncode == rc and r.stdout.splitlines()[-1].startswith(f"RESULT: {result}"), r.stdout + r.stderr
    keys = ("date (UTC)", "Python", "GPU, driver", "TensorRT", "cuda-python", "probe")
    assert all(f"\n{key}:" in r.stdout for key in keys)
    assert ("  FAILED tests/gpu/test_x.py::test_a" in r.stdout) == (result == "FAIL")  # what differed
