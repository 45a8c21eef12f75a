"""The `actparse compare` HTML report on a small pipeline-like project: the pipeline's plots A vs B, the
models that changed (by out hash) with their training curves, and changed rows drawn as boxes on the
decoded frames of the most-changed videos, checked in headless Chromium with the network cut off."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from actparse.compare import compare, main
from flowkit import dvc, init_repo, run

CHROMIUM = os.environ.get("ACTPARSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

DECODE = '''
import cv2, numpy as np, pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
Path("artifacts").mkdir(exist_ok=True)
rows = []
for v in range(3):
    for f in range(0, 20, 5):
        img = np.full((48, 64, 3), 40 + 60 * v, np.uint8)
        cv2.rectangle(img, (8 + f, 10), (30 + f, 44), (255, 255, 255), -1)  # a "person" that moves
        ok, jpg = cv2.imencode(".jpg", img)
        rows.append({"video": f"vid{v}", "frame": f, "width": 64, "height": 48, "scale": 0.5, "jpeg": jpg.tobytes()})
pq.write_table(pa.Table.from_pylist(rows), "artifacts/frames.parquet", row_group_size=4)  # one group per video
'''

TRAIN = '''
import json, yaml
from pathlib import Path
epochs = yaml.safe_load(open("params.yaml"))["train"]["epochs"]
out = Path("artifacts/models/person_detector"); out.mkdir(parents=True, exist_ok=True)
hist = {k: [round(s / (1 + e), 4) for e in range(epochs)] for k, s in (("box_loss", 2), ("cls_loss", 3), ("dfl_loss", 1))}
(out / "model.pt").write_bytes(b"w" * epochs)
(out / "train_info.json").write_text(json.dumps({"trained": True, "epochs": epochs, "history": hist}))
Path("plots/train").mkdir(parents=True, exist_ok=True)
with open("plots/train/person_detector.csv", "w") as fh:
    fh.write("epoch,box_loss,cls_loss,dfl_loss\\n")
    for e in range(epochs):
        fh.write(f"{e + 1},{hist['box_loss'][e]},{hist['cls_loss'][e]},{hist['dfl_loss'][e]}\\n")
'''

DETECT = '''
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, yaml
from pathlib import Path
gain = yaml.safe_load(open("params.yaml"))["detect"]["gain"]
rng = np.random.default_rng(0)
rows = []
for v in range(3):
    for f in range(0, 20, 5):
        for p in range(2):
            score = float(min(1.0, rng.uniform(0.3, 0.9) * gain * (1 + v / 5)))
            if score < 0.5:
                continue
            x1 = 2 * (8 + f) + 50 * p
            rows.append({"video": f"vid{v}", "frame": f, "person": p, "score": score,
                         "box": [float(x1), 20.0, float(x1 + 44 * gain), 88.0]})  # original pixels (2x stored)
pq.write_table(pa.Table.from_pylist(rows), "artifacts/persons.parquet")
Path("plots").mkdir(exist_ok=True)
with open("plots/person_pr.csv", "w") as fh:
    fh.write("recall,precision\\n")
    for r in np.linspace(0, 1, 11):
        fh.write(f"{r:.2f},{max(0.0, 1 - r ** (2 * gain)):.4f}\\n")
'''

DVC_YAML = '''
stages:
  decode:
    cmd: python decode.py
    deps: [decode.py]
    outs: [artifacts/frames.parquet]
  train_person_detector:
    cmd: python train.py
    deps: [train.py]
    params: [train]
    outs:
      - artifacts/models/person_detector
      - plots/train:
          cache: false
  detect_persons:
    cmd: python detect.py
    deps: [detect.py, artifacts/frames.parquet, artifacts/models/person_detector]
    params: [detect]
    outs:
      - artifacts/persons.parquet
      - plots/person_pr.csv:
          cache: false
plots:
  - pr_curves:
      title: person precision vs recall
      x: recall
      y:
        plots/person_pr.csv: precision
  - train_person_detector:
      title: person detector losses
      x: epoch
      y:
        plots/train/person_detector.csv: [box_loss, cls_loss, dfl_loss]
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """main: 3 epochs, gain 1.0; branch `longer`: 5 epochs, gain 1.2. `dvc repro` + commit on each."""
    root = init_repo(tmp_path_factory.mktemp("report") / "repo")
    for name, code in (("decode.py", DECODE), ("train.py", TRAIN), ("detect.py", DETECT)):
        (root / name).write_text(textwrap.dedent(code))
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text("train:\n  epochs: 3\ndetect:\n  gain: 1.0\n")
    dvc(root, "repro")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "base"], root)
    run(["git", "checkout", "-q", "-b", "longer"], root)
    (root / "params.yaml").write_text("train:\n  epochs: 5\ndetect:\n  gain: 1.2\n")
    dvc(root, "repro")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "longer"], root)
    return root


def test_report_content(project):
    import pandas as pd

    cmp = compare(project, "main", "longer", top=3)
    assert cmp.errors == []
    # the pipeline's plots, read at both revisions
    assert [p.id for p in cmp.plots] == ["pr_curves", "train_person_detector"]
    tr = cmp.plots[1]
    assert len(tr.data_a["plots/train/person_detector.csv"]) == 3 and len(tr.data_b["plots/train/person_detector.csv"]) == 5
    # models by out hash: the detector changed, with its curve at both revisions
    [m] = cmp.models
    assert (m.path, m.stage, m.status) == ("artifacts/models/person_detector", "train_person_detector", "changed")
    [c] = m.curves
    assert len(c.data_a["plots/train/person_detector.csv"]) == 3
    # example rows on frames of the most-changed videos
    assert cmp.examples and cmp.examples[0].video == cmp.top_videos[0]["video"]
    ex = cmp.examples[0]
    assert ex.artifact == "artifacts/persons.parquet" and set(ex.image) == {"main", "longer"} and not ex.note
    mime, jpg, w, h, scale = ex.image["longer"]
    assert mime == "image/jpeg" and jpg[:2] == b"\xff\xd8" and (w, h, scale) == (64, 48, 0.5)
    # the boxes are exactly that frame's rows at each revision
    for rev in ("main", "longer"):
        run(["git", "checkout", "-q", rev], project)
        dvc(project, "checkout", "-q")
        p = pd.read_parquet(project / "artifacts/persons.parquet")
        sel = p[(p.video == ex.video) & (p.frame == ex.frame)]
        assert sorted(map(tuple, np.stack(sel.box).tolist())) == sorted(tuple(b["box"]) for b in ex.boxes[rev])
    assert any(b["how"] != "same" for b in ex.boxes["longer"])


def test_report_draws_plots_and_boxes_offline(project, tmp_path):
    if not CHROMIUM:
        pytest.skip("no system Chromium (apt-get install chromium) for the report test")
    api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) not installed")
    import cv2

    out = tmp_path / "report.html"
    assert main(["main", "longer", "--root", str(project), "--html", str(out), "--top", "3"]) == 0
    cmp = compare(project, "main", "longer", top=3)
    outside, errors = [], []
    with api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
        context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file://", "data:"))
                      else (outside.append(r.request.url), r.abort()))
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(out.as_uri(), wait_until="load")
            imgs = page.evaluate("""() => [...document.querySelectorAll('img')].map(i => ({
                plot: i.parentElement.dataset.plot || i.parentElement.dataset.curve || '',
                ok: i.complete && i.naturalWidth > 100}))""")
            svgs = page.evaluate("""() => [...document.querySelectorAll('svg.example')].map(s => ({
                rev: s.dataset.rev, images: s.querySelectorAll('image').length,
                rects: s.querySelectorAll('rect').length,
                differ: s.querySelectorAll('rect.changed, rect.added, rect.removed').length}))""")
            shots = [page.locator("svg.example").nth(i).screenshot() for i in range(len(svgs))]
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            context.close()
            browser.close()
    assert not outside and not errors, (outside[:3], errors[:3])
    plots = [i["plot"] for i in imgs if i["plot"]]
    assert {"pr_curves", "train_person_detector", "person_detector"} <= set(plots)
    assert all(i["ok"] for i in imgs), imgs
    assert len(svgs) == 2 * len(cmp.examples) >= 2
    for s, ex in zip(svgs, [(e, rev) for e in cmp.examples for rev in ("main", "longer")]):
        e, rev = ex
        assert s["rev"] == rev and s["images"] == 1 and s["rects"] == len(e.boxes[rev])
    assert sum(s["differ"] for s in svgs) > 0
    for png in shots:  # the frame is drawn (not the dark empty background) and so are coloured boxes
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert (img > 200).all(axis=2).sum() > 100  # the white "person" of the frame
        b, g, r = img[..., 0].astype(int), img[..., 1].astype(int), img[..., 2].astype(int)
        coloured = ((r > 200) & (g > 100) & (b < 80)) | ((g > 150) & (r < 80) & (b < 120)) | ((r > 200) & (g < 60))
        grey = (abs(r - g) < 12) & (abs(g - b) < 12) & (r > 150) & (r < 215)
        assert coloured.sum() + grey.sum() > 20
