"""Print, one per line, the `uv pip install` options that mirror this pip's configuration.

pip reads its index, find-links and constraint settings from pip.conf files and PIP_* variables;
uv reads neither, so scripts/setup.sh hands them over with this. Sources: `pip config list` (every
configuration file and the environment, as pip itself resolves them). uv also gets
`--index-strategy unsafe-best-match`, pip's rule of taking the best version over all indexes.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

FLAGS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}


def pip_settings(text: str) -> dict[str, list[str]]:
    """{option: values} from `pip config list` output (later lines win, as pip's own order)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        option = key.rsplit(".", 1)[-1].strip()
        if option in FLAGS or option == "no-index":
            try:
                value = " ".join(shlex.split(value))
            except ValueError:
                value = value.strip("'\"")
            out[option] = value.split()
    return out


def uv_args(settings: dict[str, list[str]]) -> list[str]:
    args = ["--index-strategy", "unsafe-best-match"]
    if settings.get("no-index", ["false"])[-1].lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    for option, flag in FLAGS.items():
        for value in settings.get(option, []):
            args += [flag, value]
    return args


def main() -> int:
    res = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    print("\n".join(uv_args(pip_settings(res.stdout if res.returncode == 0 else ""))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
