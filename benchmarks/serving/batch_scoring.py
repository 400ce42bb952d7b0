"""`featmux score` throughput and the int8 artefact's AUC change on Frappe.

Scores the Frappe test file (libFM, --dataset frappe) and the same rows as a CSV table with the fp32 and
int8 artefacts through the CLI, timing each run (the CLI's own rows/s: reading, fingerprinting, the
forward passes and writing; not the process start), and computes test AUC of both.

    python benchmarks/serving/batch_scoring.py --fp32 ART32 --int8 ART8 \
        --data ../shared/data/frappe --out benchmarks/results/serving/batch_scoring.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from featmux.data.sources import open_source


def score(artefact: Path, data: Path, out: Path, threads: int, dataset: str | None) -> float:
    """Rows per second reported by `featmux score`."""
    command = [sys.executable, "-m", "featmux.cli.main", "score", str(artefact), str(data), "--out", str(out)]
    command += ["--threads", str(threads), "--no-progress"] + (["--dataset", dataset] if dataset else [])
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    text = " ".join(done.stderr.split())
    return float(re.search(r"\(([\d,]+) rows/s\)", text).group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the Frappe directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    test_file = args.data / "frappe.test.libfm"
    source = open_source("frappe", test_file, fractions=(1.0, 0.0, 0.0))
    frame = pl.concat(list(source.split("train")))
    labels = frame["label"].to_numpy()
    record: dict = {"rows": frame.height, "runs": [], "auc": {}, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "frappe_test.csv"  # the same rows as a CSV table (never committed)
        frame.write_csv(csv)
        for name, artefact in (("fp32", args.fp32), ("int8", args.int8)):
            record["sizes"][name] = {p.name: p.stat().st_size for p in sorted(artefact.iterdir())}
            for threads in (1, 2):
                for fmt, data, dataset in (("libfm", test_file, "frappe"), ("csv", csv, None)):
                    rates = [
                        score(artefact, data, Path(tmp) / "s.csv", threads, dataset)
                        for _ in range(args.repeats)
                    ]
                    run = {"precision": name, "format": fmt, "threads": threads, "rows_per_s": rates}
                    print(json.dumps(run), flush=True)
                    record["runs"].append(run)
            scores = pl.read_csv(Path(tmp) / "s.csv")["score"].to_numpy()
            record["auc"][name] = float(roc_auc_score(labels, scores))
            record.setdefault("scores", {})[name] = scores
    diff = np.abs(record["scores"]["int8"] - record["scores"]["fp32"])
    record["int8_vs_fp32"] = {
        "auc_change": record["auc"]["int8"] - record["auc"]["fp32"],
        "max_abs_probability_diff": float(diff.max()),
        "mean_abs_probability_diff": float(diff.mean()),
    }
    del record["scores"]
    print(json.dumps({k: record[k] for k in ("auc", "int8_vs_fp32", "sizes")}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
