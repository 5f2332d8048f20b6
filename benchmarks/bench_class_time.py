"""Class time per notebook: reading (estimated) + running (measured) + exercises (estimated).

    .venv/bin/python benchmarks/bench_class_time.py            # all notebooks, cold teacher cache
    .venv/bin/python benchmarks/bench_class_time.py --no-run   # reading and exercise estimates only

- Running: measured -- each notebook executed top to bottom in its own process with an empty teacher cache
  (``bench_notebooks.measure``: wall seconds, kernel CPU seconds, peak resident memory).
- Reading: estimated from the words of the markdown cells at READING_WPM words per minute (technical prose
  with equations is read more slowly than the 200-250 wpm of plain prose), plus CODE_LINES_PER_MINUTE for
  skimming the code cells. Stated here so the estimate can be redone with other rates.
- Exercises: estimated allowances per task, counted from the notebook's calls: an implement-it exercise
  (``kdlab.exercises.check("kd_loss", ...)`` etc.) IMPLEMENT_MINUTES, a numeric one NUMERIC_MINUTES, a
  predict-then-check question PREDICT_MINUTES (read, think, commit, read the reveal).

The table printed at the end is the one in docs/teaching.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READING_WPM = 150
CODE_LINES_PER_MINUTE = 20
IMPLEMENT_MINUTES = 10
NUMERIC_MINUTES = 3
PREDICT_MINUTES = 2


def _bench_notebooks():
    spec = importlib.util.spec_from_file_location("bench_notebooks", Path(__file__).with_name("bench_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def count(path: Path) -> dict:
    import nbformat

    sys.path.insert(0, str(ROOT))
    from kdlab import exercises

    notebook = nbformat.read(path, as_version=4)
    words = sum(len(cell.source.split()) for cell in notebook.cells if cell.cell_type == "markdown")
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    code_lines = sum(1 for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))
    checked = re.findall(r"kdlab\.exercises\.check\(\s*[\"']([a-z_0-9]+)[\"']", code)
    functions = {name for name in exercises.names() if exercises._EXERCISES[name].kind == "function"}
    implement = sum(1 for name in checked if name in functions)
    numeric = len(checked) - implement
    predictions = code.count("kdlab.exercises.predict(")
    reading = words / READING_WPM + code_lines / CODE_LINES_PER_MINUTE
    tasks = implement * IMPLEMENT_MINUTES + numeric * NUMERIC_MINUTES + predictions * PREDICT_MINUTES
    return {"words": words, "code_lines": code_lines, "implement": implement, "numeric": numeric,
            "predictions": predictions, "reading_min": reading, "exercise_min": tasks}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--no-run", action="store_true", help="skip executing the notebooks")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("0*.ipynb"))
    bench = None if args.no_run else _bench_notebooks()
    print(f"reading at {READING_WPM} words/min + {CODE_LINES_PER_MINUTE} code lines/min; exercises: implement-it "
          f"{IMPLEMENT_MINUTES} min, numeric {NUMERIC_MINUTES} min, prediction {PREDICT_MINUTES} min")
    print("| notebook | words | code lines | implement / numeric / predict | reading (est.) | running cold (measured) "
          "| kernel CPU | peak memory | exercises (est.) | total |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    grand = 0.0
    for path in paths:
        counts = count(path)
        run = bench.measure(path) if bench else {}
        if "error" in run:
            print(f"| {path.name} | failed: {run['error']} |")
            continue
        running_min = run.get("seconds", 0.0) / 60
        total = counts["reading_min"] + running_min + counts["exercise_min"]
        grand += total
        running = f"{run['seconds']:.0f} s" if run else "not run"
        cpu = f"{run['cpu_seconds']:.0f} s" if run else "-"
        memory = f"{run['peak_mb'] / 1024:.2f} GB" if run else "-"
        print(f"| {path.stem} | {counts['words']} | {counts['code_lines']} | {counts['implement']} / {counts['numeric']} / "
              f"{counts['predictions']} | {counts['reading_min']:.0f} min | {running} | {cpu} | {memory} | "
              f"{counts['exercise_min']} min | {total:.0f} min |")
    print(f"all notebooks: {grand:.0f} min ({grand / 60:.1f} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
