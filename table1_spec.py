"""
What Table 1 of the paper is: its 16 benchmarks in its order, the paper's Skywork-R1V3-38B number for each, and
the files eval.py reads for it from BENCH_DIR. launch.sh table1 asks this file which files to run (no heavy
imports, so the check of the inputs takes a moment); tables.py table1 lays out the results beside the paper's.

    python table1_spec.py BENCH_DIR      one line per file: benchmark <TAB> path <TAB> 1 (found) | 0 (missing)
"""
import sys
from pathlib import Path

# Table 1 of the paper (section, benchmark, the paper's Skywork-R1V3-38B number, the file stems we read from
# BENCH_DIR: VLMEvalKit's dataset names where it has the benchmark). MMMU-Pro is the mean of its standard
# (10 options) and vision settings, as MMMU-Pro reports its overall score.
TABLE1 = [
    ("General", "MMMU (val)", 76.0, ["MMMU_DEV_VAL"]),
    ("General", "EMMA (mini-cot)", 40.3, ["EMMA-mini"]),
    ("General", "MMMU-Pro", 55.4, ["MMMU_Pro_10c", "MMMU_Pro_V"]),
    ("General", "MMK12", 78.5, ["MMK12"]),
    ("General", "MMStar", 70.6, ["MMStar"]),
    ("General", "MMBench-en-1.1", 85.7, ["MMBench_DEV_EN_V11"]),
    ("General", "HallusionBench", 61.3, ["HallusionBench"]),
    ("Mathematics", "MathVista (mini)", 77.1, ["MathVista_MINI"]),
    ("Mathematics", "MathVerse (vision-only)", 59.6, ["MathVerse_MINI_Vision_Only"]),
    ("Mathematics", "MathVision", 52.6, ["MathVision"]),
    ("Mathematics", "WeMath (strict)", 56.5, ["WeMath"]),
    ("Logic", "VisuLogic", 28.5, ["VisuLogic"]),
    ("Logic", "LogicVista", 59.7, ["LogicVista"]),
    ("Logic", "MME-Reasoning", 42.8, ["MME-Reasoning"]),
    ("Physics", "PhyX (mc-text-minimal)", 52.8, ["PhyX_mini_MC"]),
    ("Physics", "SeePhys", 31.5, ["SeePhys"]),
]
# read from the HF hub parquet layout, MMMU and MathVista items are named after the benchmark, not the file
HUB_NAMES = {"MMMU_DEV_VAL": "MMMU", "MathVista_MINI": "MathVista"}
BENCH_LAYOUTS = (".tsv", ".parquet", ".jsonl", ".json", "")   # "": a directory of parquet shards


def table1_files(bench_dir):
    """-> [(benchmark, path, found)] for every file of TABLE1: the first layout present, else the .tsv path."""
    out = []
    for _, label, _, stems in TABLE1:
        for stem in stems:
            paths = [(Path(bench_dir) / (stem + ext), ext) for ext in BENCH_LAYOUTS]
            found = next((q for q, ext in paths if (q.is_file() if ext else q.is_dir())), None)
            out.append((label, str(found or paths[0][0]), found is not None))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    for label, path, found in table1_files(sys.argv[1]):
        print(f"{label}\t{path}\t{int(found)}")
