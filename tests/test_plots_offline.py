"""`dvc plots diff` of two revisions draws every plot of dvc.yaml with the network cut off: the HTML
template of scripts/setup.sh (vega, vega-lite, vega-embed inline) in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from actparse.curves import write_curves
from flowkit import dvc, init_repo, run
from test_curves import INFOS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".cache" / "vega" / "dvc_plots.html"
CHROMIUM = os.environ.get("ACTPARSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PLOTS = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
PLOT_IDS = [next(iter(p)) for p in PLOTS]


def _trained_infos(scale: float) -> dict:
    """Every network trained (the seed systems too), losses scaled by ``scale``."""
    infos = json.loads(json.dumps(INFOS))
    infos["part_detector"] = json.loads(json.dumps(INFOS["person_detector"]))
    infos["partattn"] = {"enabled": True, "loss": [1.2, 0.9, 0.7], "val_acc": [0.5, 0.6, 0.7]}

    def scale_losses(obj):
        if isinstance(obj, dict):
            return {k: ([v * scale for v in val] if k.endswith("loss") and isinstance(val, list) else scale_losses(val))
                    for k, val in obj.items()}
        return obj
    return scale_losses(infos)


def _revision(root: Path, scale: float) -> None:
    (root / "plots").mkdir(exist_ok=True)
    for name in ("person_pr.csv", "part_pr.csv", "tps_curve.csv", "confusion.csv"):
        df = pd.read_csv(ROOT / "plots" / name)
        if name.endswith("pr.csv"):
            df["precision"] = (df["precision"] * scale).clip(0, 1).round(6)
        elif name == "tps_curve.csv":
            df["accuracy"] = (df["accuracy"] * scale).round(6)
        elif scale != 1:
            df["predicted"] = np.roll(df["predicted"].to_numpy(), 1)
        df.to_csv(root / "plots" / name, index=False)
    models = root / "models"
    for model, info in _trained_infos(scale).items():
        (models / model).mkdir(parents=True, exist_ok=True)
        (models / model / "train_info.json").write_text(json.dumps(info))
    write_curves(models, root / "plots" / "train")
    shutil.rmtree(models)


@pytest.fixture(scope="module")
def two_revisions(tmp_path_factory) -> Path:
    """A git+dvc repo with the project's `plots:` definitions; main and `tuned` differ in every file."""
    root = init_repo(tmp_path_factory.mktemp("plots") / "repo")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"plots": PLOTS}, sort_keys=False))
    _revision(root, 1.0)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "main"], root)
    run(["git", "checkout", "-q", "-b", "tuned"], root)
    _revision(root, 0.8)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "tuned"], root)
    return root


def _open_offline(page_path: Path, n_expected: int, wait_ms: int = 20_000) -> dict:
    """Open a page in Chromium with every request outside file:// refused; what it drew and logged
    (waiting up to ``wait_ms`` for one chart per plot)."""
    api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) not installed")
    outside, errors = [], []
    with api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)

        def route(r):
            if r.request.url.startswith(("file://", "data:", "blob:")):
                return r.continue_()
            outside.append(r.request.url)
            return r.abort()
        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(page_path.as_uri(), wait_until="load")
            try:  # vega draws asynchronously: wait for one canvas or svg per plot
                page.wait_for_function(
                    "n => document.querySelectorAll('div[id] canvas, div[id] svg.marks').length >= n",
                    arg=n_expected, timeout=wait_ms)
            except api.TimeoutError:
                pass
            drawn = page.evaluate("""() => [...document.querySelectorAll('div[id]')].filter(d => !d.parentElement.closest('div[id]')).map(d => {
                const c = d.querySelector('canvas');
                let inked = 0;
                if (c) {  // pixels that are not background: the plot was really drawn
                    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && (px[i] < 200 || px[i + 1] < 200)) inked++;
                }
                return {id: d.id, canvas: !!c, svg: !!d.querySelector('svg.marks'), inked: inked,
                        text: d.innerText.slice(0, 200)};
            })""")
            page.screenshot(path=str(page_path.with_suffix(".png")), full_page=True)
        finally:
            context.close()
            browser.close()
    return {"drawn": drawn, "outside": outside, "errors": errors}


def _needs_browser():
    if not CHROMIUM:
        pytest.skip("no system Chromium (apt-get install chromium) for the plots test")
    if not TEMPLATE.is_file():
        pytest.skip(f"{TEMPLATE.relative_to(ROOT)} missing: run `bash scripts/setup.sh` (needs npm)")


def test_dvc_plots_diff_draws_every_plot_offline(two_revisions, tmp_path):
    _needs_browser()
    root = two_revisions
    dvc(root, "config", "--local", "plots.html_template", str(TEMPLATE))
    data = json.loads(dvc(root, "plots", "diff", "main", "tuned", "--json").stdout)
    assert not data.get("errors"), data["errors"]
    assert sorted(data["data"]) == sorted(PLOT_IDS)
    for pid, entries in data["data"].items():  # both revisions in every plot
        assert entries and set(entries[0]["revisions"]) == {"main", "tuned"}, pid
    dvc(root, "plots", "diff", "main", "tuned", "-o", str(tmp_path / "out"))
    page = tmp_path / "out" / "index.html"
    assert "cdn.jsdelivr" not in page.read_text()
    seen = _open_offline(page, len(PLOT_IDS))
    drawn = {d["id"]: d for d in seen["drawn"]}
    assert sorted(drawn) == sorted(PLOT_IDS)
    not_drawn = [pid for pid, d in drawn.items() if not (d["canvas"] or d["svg"]) or (d["canvas"] and d["inked"] < 500)]
    assert not not_drawn, f"plots not drawn: {not_drawn} ({seen['errors'][:3]})"
    assert not seen["errors"], seen["errors"][:5]
    assert not seen["outside"], seen["outside"][:3]


def test_dvc_default_page_is_blank_offline(two_revisions, tmp_path):
    """The reason for the template: DVC's own page asks a CDN for vega and draws nothing offline."""
    _needs_browser()
    root = two_revisions
    dvc(root, "config", "--local", "--unset", "plots.html_template", check=False)
    dvc(root, "plots", "diff", "main", "tuned", "-o", str(tmp_path / "cdn"))
    # its scripts fail to load at once (refused): a few seconds show that nothing gets drawn
    seen = _open_offline(tmp_path / "cdn" / "index.html", len(PLOT_IDS), wait_ms=3_000)
    assert any("cdn.jsdelivr.net" in u for u in seen["outside"])
    assert not any(d["canvas"] or d["svg"] for d in seen["drawn"])
