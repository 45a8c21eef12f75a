"""The Prefect UI shows a pipeline run: start the server with the documented command, run the flow on a
tiny project, then open the UI in headless Chromium and check the run and its task runs."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from flowkit import make_fake_project, run, shared_prefect_server

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ACTPARSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytest.importorskip("prefect", reason="prefect not installed")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) not installed")
if not CHROMIUM:
    pytest.skip("no system Chromium (apt-get install chromium) for the UI test", allow_module_level=True)


@pytest.fixture
def server():
    """`python -m flows.server` (the documented command) on a free port; yields (ui_url, api_url)."""
    return shared_prefect_server()


def _artifact_id(api: str, flow_run, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run]), key=ArtifactFilterKey(any_=[key])))
    return art.id


def test_ui_shows_completed_run_and_its_tasks(tmp_path, server):
    from flows.pipeline import drain_prefect, run_pipeline

    ui, api = server
    project = make_fake_project(tmp_path / "project")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "fake project"], project)
    sha = run(["git", "rev-parse", "--short=7", "HEAD"], project).stdout.strip()
    state = run_pipeline(project, api_url=api, fake_gpus=1, return_state=True)
    assert state.is_completed(), state.message
    drain_prefect()
    flow_run = state.state_details.flow_run_id
    shots = Path(os.environ.get("ACTPARSE_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        outside = []
        local = (ui, "data:", "blob:" + ui)
        context.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
        page = context.new_page()
        graphs = []  # what the run page fetches to draw its graph (nodes and their parents: the edges)
        page.on("response", lambda r: graphs.append(r) if "/graph-v2" in r.url and r.ok else None)
        try:
            page.goto(f"{ui}/runs/flow-run/{flow_run}", wait_until="domcontentloaded")
            header = page.locator("text=Task runs").first
            header.wait_for(timeout=60_000)
            page.get_by_text("Completed").first.wait_for(timeout=30_000)
            page.get_by_text(re.compile(r"\b9 Task runs\b")).first.wait_for(timeout=30_000)
            page.get_by_text("b[v3]").first.wait_for(timeout=30_000)  # the timeline draws every task run
            page.wait_for_timeout(3000)  # the run graph (WebGL, software-rendered here) draws its nodes and edges
            page.screenshot(path=str(shots / "prefect_flow_run.png"), full_page=False)
            body = page.inner_text("body")
            assert "actparse" in body and "Completed" in body
            # run name and tags from git
            page.get_by_text(f"commit:{sha}").first.wait_for(timeout=30_000)
            assert f"main@{sha}" in body and "branch:main" in page.inner_text("body")
            for _ in range(150):
                if graphs:
                    break
                page.wait_for_timeout(200)
            assert graphs, "the run page fetched no graph"
            nodes = {n["label"]: n for _, n in graphs[-1].json()["nodes"]}
            ids = {label: n["id"] for label, n in nodes.items()}
            parents = {label: {p["id"] for p in n["parents"]} for label, n in nodes.items()}
            assert parents["c"] == {ids["b"]} and ids["a"] in parents["b[v0]"]
            assert {ids[f"b[v{i}]"] for i in range(6)} <= parents["b"]

            # the metrics table as a markdown artifact of the run
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("actparse-metrics").first.wait_for(timeout=30_000)
            page.goto(f"{ui}/artifacts/artifact/{_artifact_id(api, flow_run, 'actparse-metrics')}",
                      wait_until="domcontentloaded")
            try:
                page.get_by_text("score.mean").first.wait_for(timeout=30_000)
            finally:
                page.screenshot(path=str(shots / "prefect_metrics_artifact.png"))
            page.screenshot(path=str(shots / "prefect_metrics_artifact.png"))
            metrics = page.inner_text("body")
            page.goto(f"{ui}/runs/flow-run/{flow_run}", wait_until="domcontentloaded")
            page.get_by_text(re.compile(r"\b9 Task runs\b")).first.wait_for(timeout=30_000)

            page.get_by_text("Task Runs", exact=True).first.click()
            for name in ("a", "b", "c", "b[v0]", "b[v3]"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            page.get_by_text("8 Completed, 1 Failed").first.wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "prefect_task_runs.png"))
            tasks = page.inner_text("body")
            # The failed item's own page carries its error.
            page.get_by_text("b[v3]", exact=True).last.click()
            page.get_by_text("item v3 is corrupt").first.wait_for(timeout=30_000)
            failed = page.inner_text("body")
        finally:
            context.close()
            browser.close()
    assert re.search(r"9 Task runs\s*\(8 Completed, 1 Failed\)", tasks)  # a, b, c + 5 items ok, b[v3] failed
    assert "Failed" in failed and "ValueError" in failed
    assert "score.mean" in metrics and "total" in metrics
    assert not outside, f"the UI fetched from outside the local server: {outside[:3]}"
    assert (shots / "prefect_flow_run.png").stat().st_size > 10_000
