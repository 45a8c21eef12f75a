"""Start a local Prefect server (API + UI, SQLite) that pipeline runs report into.

    python -m flows.server                      # UI at http://127.0.0.1:4200, Ctrl-C stops it
    python -m flows.server --port 4300 --home .prefect

then, in a second terminal, run the flow against it:

    python -m flows.pipeline --api-url http://127.0.0.1:4200/api

The server binds to 127.0.0.1 unless --host says otherwise, keeps its SQLite database under
PREFECT_HOME (--home; default: Prefect's own, ~/.prefect), and sends no telemetry. Defaults for
--host/--port come from params.yaml (flow.ui_host, flow.ui_port). Its scheduler service is on, so the
schedules of a deployment (``python -m flows.serve``) create runs.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

# Telemetry off and nothing fetched from the internet, for the server and for flow runs.
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "DVC_NO_ANALYTICS": "1",
}


def quiet_env(home: str | os.PathLike | None = None) -> dict[str, str]:
    """os.environ plus :data:`QUIET_ENV` (and PREFECT_HOME when ``home`` is given)."""
    env = dict(os.environ)
    for k, v in QUIET_ENV.items():
        env.setdefault(k, v)
    if home is not None:
        env["PREFECT_HOME"] = str(Path(home).resolve())
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


WILDCARD = ("0.0.0.0", "::", "")


def api_url(host: str, port: int) -> str:
    """The API URL to reach a server bound to ``host`` from this machine."""
    return f"http://{'127.0.0.1' if host in WILDCARD else host}:{port}/api"


def public_api_url(host: str, port: int) -> str:
    """The API URL browsers use: this machine's name when bound to every interface."""
    return f"http://{socket.getfqdn() if host in WILDCARD else host}:{port}/api"


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the Prefect API at ``url`` (…/api) answers its health check."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _libc_prctl():
    """``prctl`` of the C library on Linux (looked up here, not in the forked child), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the server child before exec: get SIGTERM when the process that started it dies (even by SIGKILL)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


# Servers started by this process and not stopped yet; stopped at interpreter exit whatever happens.
_RUNNING: set[subprocess.Popen] = set()


def start_server(host: str = "127.0.0.1", port: int = 4200, home: str | os.PathLike | None = None,
                 ui: bool = True, log_file: str | os.PathLike | None = None,
                 quiet: bool = True, scheduler: bool = True) -> subprocess.Popen:
    """Launch ``prefect server start`` as a child process (not waiting for it; see :func:`wait_healthy`).

    The server runs in its own process group (a Ctrl-C in the terminal reaches only this process, which
    then stops the server in order); it is stopped by :func:`stop_server`, at this process's exit, and,
    on Linux, by the kernel when this process dies without cleaning up (SIGKILL). ``scheduler``: run
    the services that turn deployment schedules into runs and mark late runs (off for the throw-away
    API of a single flow run).
    """
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port),
           "--analytics-off"]
    if not scheduler:
        cmd += ["--no-scheduler", "--no-late-runs"]
    if not ui:
        cmd.append("--no-ui")
    env = quiet_env(home)
    env["PREFECT_SERVER_API_HOST"] = host
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_UI_API_URL"] = public_api_url(host, port)
    out = open(log_file, "ab") if log_file else (subprocess.DEVNULL if quiet else None)
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent if _PRCTL is not None else None)
    finally:
        if log_file:
            out.close()
    proc.group = proc.pid  # it leads its own session and process group
    _RUNNING.add(proc)
    return proc


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0) -> None:
    """Block until the API answers; raise RuntimeError if the process exits or ``timeout`` passes."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if is_healthy(url):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited with code {proc.returncode} before {url} was up")
        time.sleep(0.5)
    raise RuntimeError(f"Prefect server at {url} not healthy after {timeout:.0f}s")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to the process group of a server :func:`start_server` started, else to ``proc`` alone."""
    group = getattr(proc, "group", None)
    if group is not None:
        try:
            os.killpg(group, sig)
            return
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.send_signal(sig)


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop the server and every process of its group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    _RUNNING.discard(proc)
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    _signal_group(proc, signal.SIGKILL)  # anything of its group that outlived it


@atexit.register
def _stop_all() -> None:
    for proc in list(_RUNNING):
        stop_server(proc, timeout=10.0)


@contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """In the main thread, turn SIGTERM into SystemExit while the block runs, so ``finally`` blocks (and
    the server's stop) run on ``kill`` as on Ctrl-C. Left as is where someone else handles SIGTERM."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if previous is not signal.SIG_DFL:
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def starting_server(host: str = "127.0.0.1", port: int | None = None, home: str | os.PathLike | None = None,
                    ui: bool = True, timeout: float = 180.0, log_file=None,
                    scheduler: bool = True) -> Iterator[tuple[str, Callable[[], None]]]:
    """:func:`running_server` that does not wait for the server: yields (API URL, ``wait``); call
    ``wait()`` (it blocks until the API answers) before using the URL, and do other work meanwhile."""
    port = port or free_port(host)
    with _exit_on_sigterm():
        proc = start_server(host, port, home, ui=ui, log_file=log_file, scheduler=scheduler)
        try:
            url = api_url(host, port)
            yield url, lambda: wait_healthy(url, proc, timeout)
        finally:
            stop_server(proc)


@contextmanager
def running_server(host: str = "127.0.0.1", port: int | None = None, home: str | os.PathLike | None = None,
                   ui: bool = True, timeout: float = 180.0, log_file=None, scheduler: bool = True) -> Iterator[str]:
    """A Prefect server for the duration of the ``with`` block; yields its API URL.

    The server is stopped when the block ends, when this process gets SIGINT or SIGTERM, at exit,
    and (Linux) when this process is killed outright.
    """
    with starting_server(host, port, home, ui, timeout, log_file, scheduler) as (url, wait):
        wait()
        yield url


#: written into PREFECT_HOME by ``python -m flows.server`` while its server runs: where flow runs without
#: ``--api-url`` find it (:func:`find_running`)
SERVER_FILE = "actparse-server.json"


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The PREFECT_HOME a server started from here uses: ``home``, else $PREFECT_HOME, else ~/.prefect."""
    return Path(home or os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser().resolve()


def find_running(home: str | os.PathLike | None = None) -> str | None:
    """The API URL of a ``python -m flows.server`` that serves the database of ``home`` (see
    :func:`home_dir`) and answers its health check, else None."""
    path = home_dir(home) / SERVER_FILE
    try:
        info = json.loads(path.read_text())
        pid, url = int(info["pid"]), str(info["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return url if is_healthy(url) else None


def _announce(home: Path, url: str) -> Path | None:
    """Write :data:`SERVER_FILE` into ``home`` (atomically); None where it cannot be written."""
    path = home / SERVER_FILE
    try:
        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SERVER_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps({"api_url": url, "pid": os.getpid()}) + "\n")
        os.replace(tmp, path)
        return path
    except OSError:
        return None


def _withdraw(path: Path | None) -> None:
    """Remove :data:`SERVER_FILE` if it still names this process."""
    try:
        if path is not None and json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _defaults(params_file: str) -> tuple[str, int]:
    """``flow.ui_host`` / ``flow.ui_port`` of ``params_file``; where that file is missing or unusable (the
    server started outside a project), the Prefect server's usual 127.0.0.1:4200, as ``--help`` says."""
    try:
        from actparse.params import FLOW_SECTIONS, get, load_params

        params = load_params(params_file, sections=FLOW_SECTIONS)
        return (get(params, "flow.ui_host", str),
                get(params, "flow.ui_port", int, min_value=1, max_value=65535))
    except (OSError, ValueError):
        return "127.0.0.1", 4200


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file for the defaults")
    parser.add_argument("--host", default=None, help="bind address (default flow.ui_host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default flow.ui_port, 4200)")
    parser.add_argument("--home", default=None, help="PREFECT_HOME holding the SQLite database")
    args = parser.parse_args(argv)
    host, port = _defaults(args.params)
    host, port = args.host or host, args.port or port
    url = api_url(host, port)
    if is_healthy(url):
        print(f"a Prefect server already answers at {url}", file=sys.stderr)
        return 1
    proc = start_server(host, port, args.home, quiet=False)
    # `kill`/SIGTERM stops the server child too (it runs in its own session).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    announced = None
    try:
        wait_healthy(url, proc)
        # flow runs without --api-url that would use this database report here instead of starting a server
        announced = _announce(home_dir(args.home), url)
        public = public_api_url(host, port)
        print(f"Prefect UI:  {public[:-len('/api')]}\n"
              f"run the flow into it:  python -m flows.pipeline --api-url {public}\n"
              f"or serve it as a deployment to start from the UI or on a schedule:  "
              f"python -m flows.serve --api-url {public}\n"
              f"(or export PREFECT_API_URL={public})", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _withdraw(announced)
        stop_server(proc)


if __name__ == "__main__":
    sys.exit(main())
