"""An HTML template for ``dvc plots show`` / ``dvc plots diff`` that works offline.

DVC's own page loads vega, vega-lite and vega-embed from a public CDN, so without a network it stays
blank. ``bash scripts/setup.sh`` installs the three libraries from the npm registry (versions pinned in
``scripts/vega/package-lock.json``) into ``.cache/vega/node_modules``, runs

    python -m actparse.plots_html --node-modules .cache/vega/node_modules --out .cache/vega/dvc_plots.html

and points DVC at the result in the repository's local config (``dvc config --local
plots.html_template ../.cache/vega/dvc_plots.html``). The template holds the three minified bundles
inline, so every page DVC writes from it is one self-contained file: nothing is fetched when it is
opened. DVC fills in ``{plot_divs}`` (its ``{scripts}``, the CDN tags, is left out on purpose).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: (npm package, bundle inside it), in load order (vega-embed needs the other two)
BUNDLES = (("vega", "build/vega.min.js"), ("vega-lite", "build/vega-lite.min.js"),
           ("vega-embed", "build/vega-embed.min.js"))
#: the placeholders DVC replaces in a template (dvc_render.html.HTML)
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots</title>
<!-- {versions}: bundled by actparse.plots_html, nothing is loaded from the network -->
{bundles}
<style>
  body {{ font-family: sans-serif; margin: 1em; }}
  table {{ border-spacing: 15px; }}
  div[id] {{ display: inline-block; vertical-align: top; margin: 0.5em; }}
</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def _bundle(node_modules: Path, package: str, rel: str) -> tuple[str, str]:
    pkg = node_modules / package
    try:
        version = json.loads((pkg / "package.json").read_text(encoding="utf-8"))["version"]
        code = (pkg / rel).read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError) as exc:
        raise FileNotFoundError(f"{pkg / rel}: cannot read the {package} bundle ({exc}); "
                                f"run `bash scripts/setup.sh` (needs npm)") from None
    for ph in DVC_PLACEHOLDERS:
        if ph in code:  # DVC would replace it inside the library
            raise ValueError(f"{pkg / rel}: holds DVC's placeholder {ph}; cannot inline it")
    return version, code.replace("</script", "<\\/script")


def build_template(node_modules: str | Path) -> str:
    """The template's text, with the bundles from ``node_modules`` inline."""
    node_modules = Path(node_modules)
    versions, scripts = [], []
    for package, rel in BUNDLES:
        version, code = _bundle(node_modules, package, rel)
        versions.append(f"{package} {version}")
        scripts.append(f"<script>{code}</script>")
    # format() would trip over the braces of the JavaScript: fill the bundles in last, by replace
    page = PAGE.format(versions=", ".join(versions), bundles="@@BUNDLES@@", refresh_tag="{refresh_tag}",
                       plot_divs="{plot_divs}")
    return page.replace("@@BUNDLES@@", "\n".join(scripts))


def write_template(node_modules: str | Path, out: str | Path) -> Path:
    from .compare import write_report  # atomic, readable by others

    return write_report(out, build_template(node_modules))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m actparse.plots_html", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node-modules", default=".cache/vega/node_modules",
                    help="folder holding vega, vega-lite and vega-embed (default: .cache/vega/node_modules)")
    ap.add_argument("--out", default=".cache/vega/dvc_plots.html", help="template to write")
    args = ap.parse_args(argv)
    try:
        out = write_template(args.node_modules, args.out)
    except (OSError, ValueError) as exc:
        print(f"actparse.plots_html: error: {exc}", file=sys.stderr)
        return 2
    print(f"DVC plots template: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
