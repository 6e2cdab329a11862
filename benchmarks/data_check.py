"""How long the data check takes on 100k and 1M short rows, beside reading them alone.

    python benchmarks/data_check.py [--rows 100000 1000000] [--leak 0.02]

The aim is 1M short rows (a prompt of about 12 words, a short answer) in under a minute on
two cores. Each size writes a train file and an eval file (a tenth of its size, ``--leak``
of whose rows are copies or near copies of train rows), then times, in this process:

- reading: the trial's own loader over both files (the floor any check pays);
- the check: :func:`sweeps.datacheck.check_files` (read, exact and near duplicates through
  MinHash/LSH, leakage, personal data, word statistics; no tokenizer).

Prints seconds for each (wall clock, and the process's CPU time over all its threads, which
a shared, loaded machine inflates less), the ratio, and the leaks found against the leaks
planted.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WORDS = sorted(
    {"".join(random.Random(i).choices(_LETTERS, k=3 + i % 6)) for i in range(20000)}
)  # pseudo-words: a 20k vocabulary of letters only


def _write(folder: Path, rows: int, leak: float) -> tuple[Path, Path, int]:
    rng = random.Random(0)
    train, eval_rows = folder / "train.jsonl", folder / "eval.jsonl"
    prompts = []
    with train.open("w") as handle:
        for i in range(rows):
            prompt = " ".join(rng.choices(_WORDS, k=12))
            prompts.append(prompt)
            handle.write(json.dumps({"prompt": prompt, "completion": f" answer {i % 97}"}) + "\n")
    planted = 0  # eval rows that copy a train row whole
    with eval_rows.open("w") as handle:
        for i in range(rows // 10):
            if rng.random() < leak:
                copied = rng.randrange(rows)
                prompt, answer = prompts[copied], f" answer {copied % 97}"
                planted += 1
            else:
                prompt, answer = " ".join(rng.choices(_WORDS, k=12)), f" answer {i % 97}"
            handle.write(json.dumps({"prompt": prompt, "completion": answer}) + "\n")
    return train, eval_rows, planted


def _measure(rows: int, leak: float) -> None:
    from sweeps.datacheck import check_files
    from sweeps.trial.data import load_examples

    with tempfile.TemporaryDirectory() as folder:
        train, eval_path, planted = _write(Path(folder), rows, leak)
        started, cpu = time.perf_counter(), time.process_time()
        load_examples(str(train), None, bad_rows="skip")
        load_examples(str(eval_path), None, bad_rows="skip")
        read_s, read_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        report = check_files(str(train), eval=str(eval_path))
        check_s, check_cpu = time.perf_counter() - started, time.process_time() - cpu
    total = rows + rows // 10
    print(
        f"{total:>9,} rows  read {read_s:6.1f} s (cpu {read_cpu:5.1f} s)   check "
        f"{check_s:6.1f} s (cpu {check_cpu:5.1f} s)   (x{check_s / read_s:.1f} of reading)   "
        f"leaks found {report.eval_leaks.total} "
        f"of {planted} planted; train duplicates {report.train_duplicates.total}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--leak", type=float, default=0.02)
    args = parser.parse_args()
    for rows in args.rows:
        _measure(rows, args.leak)


if __name__ == "__main__":
    main()
