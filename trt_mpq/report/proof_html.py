"""The proof section of report.html: the split, every look on the confirm part, the interval and the
replicas' spread, what the data cannot resolve, and the samples whose top-1 the mix changes."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from ..artifacts import Confirmation, DataInfo
from ..precision import Plan

THUMBNAILS = 24
THUMB_PX = 96


def mix_text(plan: Plan) -> str:
    """``3 INT8 + 40 FP16 + 2 FP8``: a mix's lowered units per precision (INT8 and FP16 always there)."""
    return " + ".join(f"{n} {p.value.upper()}" for p, n in plan.counts().items())


def _thumbnail(path: Path) -> str:
    """A small inline JPEG of an evaluation image ('' when it cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _interval(low, high) -> str:
    return f"&ge; {low:.4f}" if high is None else f"{low:.4f}-{high:.4f}"


def proof_section(conf: Confirmation | None, evaluation: DataInfo) -> str:
    """The section for a plan's confirmation on ``evaluation`` ('' when there was none)."""
    if conf is None:
        return ""
    esc = html.escape
    level = (f"one-sided bound at {conf.look_confidence:.4g} per look (confidence {conf.confidence} over all "
             "looks)" if conf.confidence is not None else
             f"the worst of the confirm part and its replicas; {conf.interval_confidence:.0%} interval shown")
    rows = "".join(
        f"<tr><td>{i}</td><td>{mix_text(x.plan)}</td><td>{x.estimated_ms:.4f}</td>"
        f"<td>{x.score:.4f}</td><td>{_interval(x.low, None if math.isinf(x.high) else x.high)}</td>"
        f"<td>{(min(x.replicas) if x.replicas else float('nan')):.4f}-"
        f"{(max(x.replicas) if x.replicas else float('nan')):.4f}</td><td>{_num(x.bound)}</td>"
        f"<td>{x.decision:.4f}</td><td>{'yes' if x.passed else 'no'}</td></tr>"
        for i, x in enumerate(conf.looks, 1))
    notes = "".join(f"<li>{esc(n)}</li>" for n in conf.limits)
    changed = conf.changed
    samples = ""
    if changed:
        folder = Path(evaluation.source) if evaluation.kind == "images" else None
        cells = []
        for name in changed[:THUMBNAILS]:
            src = _thumbnail(folder / name) if folder is not None else ""
            img = f'<img alt="{esc(name)}" src="{src}"><br>' if src else ""
            cells.append(f'<figure style="display:inline-block;margin:4px">{img}<figcaption>{esc(name)}'
                         "</figcaption></figure>")
        more = f" and {len(changed) - THUMBNAILS} more" if len(changed) > THUMBNAILS else ""
        samples = (f"<h3>Samples whose top-1 the mix changes ({len(changed)} of {evaluation.samples})</h3>"
                   f"<div>{''.join(cells)}{esc(more)}</div>")
    margin = "" if conf.margin is None else f", margin {conf.margin:.4f}"
    threshold = "" if conf.threshold is None else f"; it must reach {conf.threshold:.4f}{margin}"
    return f"""<h2>Proof on held-out samples</h2>
<p>The search selected on {conf.search_samples} evaluation samples; the result was decided on the other
{conf.confirm_samples} and on {conf.replicas} replicas of them with every input moved by up to
{conf.jitter:.2g} of its RMS (float32 rounding scale), standing in for another backend's arithmetic. The
figure that decides: {esc(level)}; FP32 on the confirm part {conf.fp32_score:.4f}{threshold}.</p>
<ul class="note">{notes}</ul>
<table><tr><th>look</th><th>lowered units</th><th>ms</th><th>confirm score</th><th>interval</th>
<th>replicas</th><th>bound</th><th>decision</th><th>meets budget</th></tr>{rows}</table>
{samples}"""
