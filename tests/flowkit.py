"""Test helper (not a test module): a tiny git+dvc project with three stages a -> b -> c.

``b`` is mapped per item by the flow (its module defines FLOW_MAPPER) and marked as a GPU stage;
items listed in ``b.bad`` fail. ``c`` exits 3 when ``c.offset`` is negative.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

STAGE_A = '''
import yaml
from pathlib import Path
p = yaml.safe_load(open("params.yaml"))
Path("out").mkdir(exist_ok=True)
Path("out/items.txt").write_text("".join(f"v{i}\\n" for i in range(p["a"]["n"])))
print("a: wrote", p["a"]["n"], "items")
'''

STAGE_B = '''
"""b: value of item v<i> = i * b.k; items in b.bad fail. The flow maps it per item (FLOW_MAPPER)."""
import json
import tempfile
from pathlib import Path

import yaml


class Mapper:
    def __init__(self, root, params):
        self.root = Path(root)
        self.k = params["b"]["k"]
        self.bad = set(params["b"].get("bad") or [])

    def items(self):
        return (self.root / "out/items.txt").read_text().split()

    def item_name(self, item):
        return item

    def run_item(self, item, workdir):
        if item in self.bad:
            raise ValueError(f"item {item} is corrupt")
        (Path(workdir) / f"{item}.json").write_text(json.dumps({"value": int(item[1:]) * self.k}))
        return {"item": item}

    def merge(self, items, errors, workdir):
        values = {it: json.loads((Path(workdir) / f"{it}.json").read_text())["value"]
                  for it in items if it not in errors}
        skipped = {it: errors[it]["message"] for it in items if it in errors}
        (self.root / "out/b.json").write_text(json.dumps({"values": values, "skipped": skipped}, sort_keys=True))
        return {"skipped": len(skipped)}


FLOW_MAPPER = Mapper

if __name__ == "__main__":
    m = Mapper(".", yaml.safe_load(open("params.yaml")))
    items, errors = m.items(), {}
    with tempfile.TemporaryDirectory() as wd:
        for it in items:
            try:
                m.run_item(it, wd)
            except ValueError as exc:
                errors[it] = {"type": "ValueError", "message": str(exc)}
        m.merge(items, errors, wd)
'''

STAGE_C = '''
import json
import sys
from pathlib import Path

import yaml
p = yaml.safe_load(open("params.yaml"))
if p["c"]["offset"] < 0:
    print("c: offset must be >= 0", file=sys.stderr)
    sys.exit(3)
b = json.loads(Path("out/b.json").read_text())
Path("out/c.txt").write_text(str(sum(b["values"].values()) + p["c"]["offset"]))
'''

DVC_YAML = '''
stages:
  a:
    cmd: python -m stages.a
    deps: [stages/a.py]
    params: [a]
    outs: [out/items.txt]
  b:
    cmd: python -m stages.b
    deps: [stages/b.py, out/items.txt]
    params: [b]
    outs: [out/b.json]
  c:
    cmd: python -m stages.c
    deps: [stages/c.py, "${data.dir}/b.json"]
    params: [c.offset]
    outs: [out/c.txt]
'''

PARAMS = {
    "data": {"dir": "out"},
    "a": {"n": 6},
    "b": {"k": 2, "bad": ["v3"]},
    "c": {"offset": 1},
    "flow": {"gpu_stages": ["b"], "map_stages": ["b"], "scheduler": None, "n_workers": 1, "processes": False,
             "workdir": "work", "ui_host": "127.0.0.1", "ui_port": 4200},
}

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, **GIT_ENV, DVC_NO_ANALYTICS="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(cmd, cwd=cwd, env=env, check=check, capture_output=True, text=True)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def init_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q", "-b", "main"], root)
    dvc(root, "init", "-q")
    with open(root / ".dvc" / "config", "a") as fh:
        fh.write("[core]\n    analytics = false\n")
    return root


def make_fake_project(root: Path, init: bool = True, **param_updates) -> Path:
    """The a -> b -> c project under ``root`` (a git+dvc repo unless ``init`` is False)."""
    if init:
        init_repo(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "stages").mkdir(exist_ok=True)
    (root / "stages/__init__.py").write_text("")
    for name, src in (("a", STAGE_A), ("b", STAGE_B), ("c", STAGE_C)):
        (root / f"stages/{name}.py").write_text(textwrap.dedent(src))
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / ".gitignore").write_text("/work/\n")
    write_params(root, **param_updates)
    return root


def write_params(root: Path, **updates) -> None:
    """params.yaml = PARAMS with ``section__key=value`` updates."""
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    path = root / "params.yaml"
    if path.exists():
        params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        section, key = dotted.split("__")
        params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def dvc_status(root: Path) -> dict:
    """``dvc status`` of every stage (DVC's own answer): {} when everything is up to date."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        status = repo.status()
    return {key.rsplit(":", 1)[-1]: value for key, value in status.items()}  # keys are cwd-relative


_SERVER: dict = {}


def shared_prefect_server() -> tuple[str, str]:
    """One `python -m flows.server` (the documented command) per test process, on a free port with a
    throw-away PREFECT_HOME; stopped at exit. Returns (ui_url, api_url)."""
    if "api" in _SERVER:
        return _SERVER["ui"], _SERVER["api"]
    import atexit
    import shutil
    import tempfile

    from flows.server import api_url, free_port, quiet_env, stop_server, wait_healthy

    home = Path(tempfile.mkdtemp(prefix="actparse-prefect-"))
    port = free_port()
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "flows.server", "--port", str(port), "--home", str(home)],
                            cwd=Path(__file__).resolve().parents[1], env=quiet_env(home),
                            stdout=log, stderr=subprocess.STDOUT)

    def _stop():
        try:
            from flows.pipeline import drain_prefect

            drain_prefect()  # flush queued logs/events while the server is still up
        finally:
            stop_server(proc)  # SIGTERM: flows.server stops its Prefect child too
            log.close()
            shutil.rmtree(home, ignore_errors=True)

    try:
        wait_healthy(api_url("127.0.0.1", port), proc, timeout=240)
    except BaseException:
        _stop()
        raise
    atexit.register(_stop)
    _SERVER.update(ui=f"http://127.0.0.1:{port}", api=api_url("127.0.0.1", port))
    return _SERVER["ui"], _SERVER["api"]
