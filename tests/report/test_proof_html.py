"""The proof section of report.html: the looks, the limits, and the changed samples with thumbnails."""

from __future__ import annotations

import math

from PIL import Image

from trt_mpq.artifacts import Confirmation, DataInfo, Look
from trt_mpq.precision import Plan
from trt_mpq.report.proof_html import proof_section


def _report(source, kind, changed):
    look = Look(Plan.of({"a": "int8", "b": "int8", "c": "fp16"}), 0.32, 0.99, 0.95, math.inf, (0.97, 0.99), None,
                True)
    conf = Confirmation(10, 10, 2, 2 ** -20, None, None, 0.95, 1.0, 0.95, look, (look,), tuple(changed),
                        ("20 evaluation samples", "one changed top-1 among 10 confirm samples is worth 0.1000"))
    assert Confirmation.from_json(conf.to_json()) == conf
    return conf, DataInfo(str(source), kind, 20)


def test_changed_images_get_thumbnails_and_every_look_a_row(tmp_path):
    Image.new("RGB", (300, 200), (200, 30, 30)).save(tmp_path / "cat.jpg")
    page = proof_section(*_report(tmp_path, "images", ["cat.jpg", "missing.jpg"]))
    assert page.count("data:image/jpeg;base64,") == 1  # the unreadable one is named, without a picture
    assert "missing.jpg" in page and "2 of 20" in page and "worth 0.1000" in page
    assert "1 FP16 + 2 INT8" in page and "margin 0.0200" in page
    assert "<td>0.9700-0.9900</td>" in page and "<td>&ge; 0.9500</td>" in page
    arrays = proof_section(*_report(tmp_path, "npz", ["sample 3"]))
    assert "sample 3" in arrays and "data:image" not in arrays
    assert proof_section(None, DataInfo("x", "npz", 20)) == ""
