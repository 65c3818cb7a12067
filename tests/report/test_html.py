"""report.html is one self-contained file that renders its charts offline."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from trt_mpq import PlanOptions
from trt_mpq import plan as plan_from_analysis
from trt_mpq.artifacts import Budget

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture
def report_html(analysed):
    plan_from_analysis(analysed / "run", PlanOptions(eval=str(analysed / "eval.npz"), metric="agreement",
                                                      budget=Budget(max_drop=0.1), latency_batch=64))
    return analysed / "run" / "report.html"


def test_report_is_self_contained(report_html):
    text = report_html.read_text()
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 4
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing to fetch
    assert "<script" not in text
    assert "conv2" in text and "Verification log" in text and "estimated" in text
    assert re.search(r"<b>By kind</b> gemm 3 \(", text) and re.search(r"<b>Weights</b> [0-9.]+ MB \(", text)


def test_report_renders_charts_in_a_headless_browser(report_html, tmp_path):
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium here (.ci/run installs Debian's chromium)")
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1800", f"--screenshot={shot}",
           report_html.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists(), "the browser wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    green = np.all(np.abs(pixels - [0x2E, 0x7D, 0x32]) < 12, axis=1).sum()
    blue = np.all(np.abs(pixels - [0x15, 0x65, 0xC0]) < 12, axis=1).sum()
    assert green + blue > 2000, "the charts did not render (no bar colours in the screenshot)"
