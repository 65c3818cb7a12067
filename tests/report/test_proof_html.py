"""The proof section of report.html: the looks, the limits, and the changed samples with thumbnails."""

from __future__ import annotations

from PIL import Image

from trt_mpq.report.proof_html import proof_section


def _report(source, kind, changed):
    look = {"int8": 2, "fp16": 1, "latency_ms": 0.32, "score": 0.99, "interval": [0.95, None],
            "replicas": [0.97, 0.99], "bound": None, "decision": 0.97, "passed": True}
    conf = {"search_samples": 10, "confirm_samples": 10, "replicas": 2, "jitter": 2 ** -20, "confidence": None,
            "look_confidence": None, "interval_confidence": 0.95, "fp32_score": 1.0, "threshold": 0.95,
            "margin": 0.02, "chosen": look, "looks": [look], "changed": changed,
            "limits": ["20 evaluation samples", "one changed top-1 among 10 confirm samples is worth 0.1000"]}
    return {"result": {"confirmation": conf}, "evaluation": {"source": str(source), "kind": kind, "samples": 20}}


def test_changed_images_get_thumbnails_and_every_look_a_row(tmp_path):
    Image.new("RGB", (300, 200), (200, 30, 30)).save(tmp_path / "cat.jpg")
    page = proof_section(_report(tmp_path, "images", ["cat.jpg", "missing.jpg"]))
    assert page.count("data:image/jpeg;base64,") == 1  # the unreadable one is named, without a picture
    assert "missing.jpg" in page and "2 of 20" in page and "worth 0.1000" in page and "margin 0.0200" in page
    assert "<td>0.9700-0.9900</td>" in page and "<td>&ge; 0.9500</td>" in page
    arrays = proof_section(_report(tmp_path, "npz", ["sample 3"]))
    assert "sample 3" in arrays and "data:image" not in arrays
    assert proof_section({"result": {}, "evaluation": {}}) == ""
