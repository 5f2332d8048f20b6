"""Layer a new virtual environment over this interpreter's: ``python scripts/layer_venv.py NEW_VENV``.

Used by ``make widgets7``: the environment that runs the widget tests against ipywidgets 7.7.1 holds only
ipywidgets 7.7.1 (and ipython_genutils) itself and finds everything else (torch, kdlab, pytest) in .venv.
Its own site-packages come first on ``sys.path``, so its ipywidgets wins over .venv's. The ``.pth`` line
calls ``site.addsitedir`` so that .venv's own ``.pth`` files (kdlab's editable install) are processed too.
"""
import sys
import sysconfig
from pathlib import Path


def main(argv):
    if len(argv) != 1:
        raise SystemExit("usage: python scripts/layer_venv.py NEW_VENV")
    new = Path(argv[0]).resolve()
    own = sorted(new.glob("lib/python*/site-packages")) or sorted(new.glob("Lib/site-packages"))
    if not own:
        raise SystemExit(f"layer_venv: {new} has no site-packages folder; create it with python -m venv first")
    base = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    line = "import site; " + "; ".join(f"site.addsitedir({path!r})" for path in base) + "\n"
    for folder in own:
        (folder / "_kdlab_base.pth").write_text(line)
    print(f"layer_venv: {new} uses {', '.join(base)} after its own packages")


if __name__ == "__main__":
    main(sys.argv[1:])
