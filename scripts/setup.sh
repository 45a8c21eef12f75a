#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned dependencies and actparse itself.
# Idempotent: does nothing when requirements.lock and pyproject.toml are unchanged since the last run.
# Optional extras (each with its own lock file and stamp): `bash scripts/setup.sh mmpose` or
# ACTPARSE_EXTRAS=mmpose adds the mmpose keypoints backend (requirements-mmpose.lock; docs/pose.md);
# `torchcodec` adds the torchcodec decode backend (requirements-torchcodec.lock; docs/stages.md).
# The pinned set is installed with uv (parallel unpacking: about 1 minute instead of pip's 3) when the
# package index has it, with pip otherwise or if uv fails (ACTPARSE_NO_UV=1: always pip). uv gets the
# index, find-links and constraint settings of your pip configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.actparse-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing pinned dependencies into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip 'setuptools<81' wheel
  installed=0
  if [ "${ACTPARSE_NO_UV:-0}" != 1 ] && .venv/bin/python -m pip install -q uv >/dev/null 2>&1; then
    mapfile -t uv_args < <(.venv/bin/python scripts/pip_to_uv.py)
    if .venv/bin/python -m uv pip install -q --compile-bytecode --python .venv/bin/python "${uv_args[@]}" -r requirements.lock; then
      installed=1
    else
      echo "setup: uv failed; installing with pip instead" >&2
    fi
  fi
  [ "$installed" = 1 ] || .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

# Offline DVC plots: `dvc plots show/diff` pages load vega from a CDN unless given a template with it
# inside. vega, vega-lite and vega-embed come from the npm registry (exact versions and hashes in
# scripts/vega/package-lock.json) into .cache/vega/; actparse.plots_html inlines them into
# .cache/vega/dvc_plots.html, which this repository's local DVC config (.dvc/config.local) names.
# Without npm nothing fails: the plots pages then need the internet to draw.
vega_dir=.cache/vega
if command -v npm >/dev/null 2>&1; then
  want_v=$(cat scripts/vega/package.json scripts/vega/package-lock.json actparse/plots_html.py | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$vega_dir/.stamp" 2>/dev/null || true)" != "$want_v" ] || [ ! -f "$vega_dir/dvc_plots.html" ]; then
    echo "setup: installing vega for offline DVC plots (npm ci, scripts/vega/package-lock.json)"
    mkdir -p "$vega_dir"
    cp scripts/vega/package.json scripts/vega/package-lock.json "$vega_dir/"
    if (cd "$vega_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) &&
       .venv/bin/python -m actparse.plots_html --node-modules "$vega_dir/node_modules" --out "$vega_dir/dvc_plots.html"; then
      echo "$want_v" > "$vega_dir/.stamp"
    else
      echo "setup: warning: could not install vega with npm; \`dvc plots\` pages will load it from the internet" >&2
    fi
  fi
  if [ -f "$vega_dir/dvc_plots.html" ]; then
    DVC_NO_ANALYTICS=1 .venv/bin/dvc config --local plots.html_template ../$vega_dir/dvc_plots.html
  fi
else
  echo "setup: npm not found: \`dvc plots show/diff\` pages will load vega from the internet (blank offline);" \
       "install Node.js + npm and run this again for offline plots" >&2
fi

# Optional extras, from the arguments or ACTPARSE_EXTRAS (comma or space separated).
extras="$* ${ACTPARSE_EXTRAS:-}"
for extra in ${extras//,/ }; do
  case "$extra" in
    mmpose)
      lock=requirements-mmpose.lock
      stamp_x=.venv/.actparse-extra-mmpose
      # requirements.lock is in the stamp too: a new numpy there means xtcocotools must be compiled again
      want_x=$(cat "$lock" requirements.lock | sha256sum | cut -d' ' -f1)
      if [ "$(cat "$stamp_x" 2>/dev/null || true)" != "$want_x" ]; then
        echo "setup: installing the mmpose extra into .venv ($lock)"
        # Everything is pinned in the lock (--no-deps). xtcocotools is compiled against the installed
        # numpy (Cython first, --no-build-isolation; no cached wheel built against another numpy).
        .venv/bin/python -m pip install -q --no-deps -r <(grep -iv '^xtcocotools==' "$lock")
        .venv/bin/python -m pip install -q --no-deps --no-build-isolation --no-binary xtcocotools --no-cache-dir \
          --force-reinstall "$(grep -i '^xtcocotools==' "$lock")"
        echo "$want_x" > "$stamp_x"
      fi
      ;;
    torchcodec)
      # decode.backend: torchcodec (docs/stages.md); it needs FFmpeg's shared libraries at run time
      stamp_x=.venv/.actparse-extra-torchcodec
      want_x=$(cat requirements-torchcodec.lock requirements.lock | sha256sum | cut -d' ' -f1)
      if [ "$(cat "$stamp_x" 2>/dev/null || true)" != "$want_x" ]; then
        echo "setup: installing the torchcodec extra into .venv (requirements-torchcodec.lock)"
        .venv/bin/python -m pip install -q --no-deps -r requirements-torchcodec.lock
        echo "$want_x" > "$stamp_x"
      fi
      ;;
    *) echo "setup: unknown extra '$extra' (known: mmpose, torchcodec)" >&2; exit 2 ;;
  esac
done
