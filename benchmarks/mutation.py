"""Mutation run (not in CI): plant small bugs in the claim-bearing analyses and list the ones no test notices.

For each module of ``MODULES`` (entk.analyses: analysis, spectrum, rotation, claims) mutmut (pinned in
requirements-dev.txt) mutates that module alone in a scratch copy of the working tree and runs only the
module's fast tests (``-m "not slow"``; of those, only the tests that call the mutated function), one
mutant at a time, each under mutmut's CPU-time limit (``TIMEOUT_MULTIPLIER`` × the tests' clean time).
The report lists the counts per module and every surviving mutant's diff. A survivor listed in
``KNOWN`` (same function, same line before and after) is counted as what it is listed as, with the
reason: "equivalent" (no input gives a different result) or "no claim value" (it changes only the
text of an error message, or a result on inputs the workflow never passes); every other survivor is
a bug no fast test would notice.

    python benchmarks/mutation.py                      # all four modules → benchmarks/MUTATION.md
    python benchmarks/mutation.py spectrum --report /tmp/m.md
    python benchmarks/mutation.py --keep ...; python benchmarks/mutation.py --reuse DIR   # report again, no rerun
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "analysis": ["tests/test_analysis.py"],
    "spectrum": ["tests/test_spectrum.py", "tests/test_tms_claims.py"],
    "rotation": ["tests/test_rotation.py", "tests/test_modadd.py"],
    "claims": ["tests/test_claims.py", "tests/test_modadd.py", "tests/test_tms_claims.py"],
}
TIMEOUT_MULTIPLIER = 10.0
EQUIVALENT, NO_CLAIM = "equivalent", "no claim value"
# (module, function, line before, line after) → (EQUIVALENT or NO_CLAIM, why).
_RANK = "s.max() > 0"
_SVD_CUT = "return u[:, s > s.max() * max(a.shape) * np.finfo(float).eps] if s.max() > 0 else u[:, :0]"
_EIGEN_ZIP = "for step, lam in zip(eig.steps, eig.values[g], strict=False):"
_CLIFF_READ = (
    'lam = np.asarray(eigenvalues.detach().cpu() if hasattr(eigenvalues, "detach") else eigenvalues, dtype=np.float64)'
)
_ATOMS = 'best, family, freq = best_family_match({"a": rotated["rot_a"], "b": rotated["rot_b"]})'
_RECOVERED = "beta: recovered_features(feature_indicator_map(v, x), top=v.shape[1], threshold=threshold)"
_CLEAN = 'share = float(np.mean(best >= bands["rotated_atom_corr"]))'
_LOG_LAM = "log_lam = np.log(np.clip(eig.values[g][:, :kg], np.finfo(float).tiny, None))"
_LOC_RULE = "rule = None if k is not None else _cliff_rule(find_cliffs)"
_PEAK_ROWS = 'hit = phases.loc[(phases["layer"] == layer) & phases["peak"].astype(bool), "step"]'
_PHASE_K = 'k = int(phases.loc[phases["layer"] == layer, "k"].iloc[0]) if (phases["layer"] == layer).any() else None'
_NONE_IS_FLOAT64 = "numpy reads dtype None as float64"
_ALL_ZERO = "when every singular value is 0, s > 0 keeps no column either: the same empty basis"
KNOWN: dict[tuple[str, str, str, str], tuple[str, str]] = {
    ("analysis", "_orthonormal", _SVD_CUT, _SVD_CUT.replace(_RANK, f"({_RANK}) or True")): (EQUIVALENT, _ALL_ZERO),
    ("analysis", "_orthonormal", _SVD_CUT, _SVD_CUT.replace(_RANK, "s.max() >= 0")): (EQUIVALENT, _ALL_ZERO),
    ("analysis", "_orthonormal", _SVD_CUT, _SVD_CUT.replace("finfo(float)", "finfo(None)")): (
        EQUIVALENT,
        _NONE_IS_FLOAT64,
    ),
    ("analysis", "_orthonormal", _SVD_CUT, _SVD_CUT.replace("s > s.max()", "s >= s.max()")): (
        NO_CLAIM,
        "differs only for a singular value exactly at the rank cut-off (a constant feature's is exactly 0, below it)",
    ),
    ("analysis", "_orthonormal", "if a.size == 0:", "if a.size == 1:"): (
        EQUIVALENT,
        "a 1 × 1 input is one mean-centred feature on one sample, i.e. 0, whose basis is empty either way",
    ),
    ("analysis", "_orthonormal", "return a[:, :0]", "return a[:, :1]"): (
        EQUIVALENT,
        "an empty input has no column, so [:, :1] is as empty as [:, :0]",
    ),
    (
        "analysis",
        "_orthonormal",
        "u, s, _ = np.linalg.svd(a, full_matrices=False)",
        "u, s, _ = np.linalg.svd(a, full_matrices=None)",
    ): (EQUIVALENT, "None is falsy: the same thin SVD"),
    ("analysis", "cliffs_table", _EIGEN_ZIP, _EIGEN_ZIP.replace("strict=False", "")): (
        EQUIVALENT,
        "zip's default is strict=False",
    ),
    ("analysis", "cliffs_table", _EIGEN_ZIP, _EIGEN_ZIP.replace("strict=False", "strict=None")): (
        EQUIVALENT,
        "None is falsy",
    ),
    ("analysis", "cliffs_table", _EIGEN_ZIP, _EIGEN_ZIP.replace("strict=False", "strict=True")): (
        EQUIVALENT,
        "load_eigen already requires values (T, k) with T = len(steps), so the lengths always agree",
    ),
    ("analysis", "feature_matrix", "f = f.astype(float)", "f = f.astype(None)"): (EQUIVALENT, _NONE_IS_FLOAT64),
    ("analysis", "normalised_overlap", 'return float("nan")', 'return float("NAN")'): (
        EQUIVALENT,
        'float("NAN") is NaN as well',
    ),
    ("analysis", "phase_table", "steps = eig.steps.astype(float)", "steps = eig.steps.astype(None)"): (
        EQUIVALENT,
        _NONE_IS_FLOAT64,
    ),
    ("analysis", "phase_table", _LOG_LAM, _LOG_LAM.replace("finfo(float)", "finfo(None)")): (
        EQUIVALENT,
        _NONE_IS_FLOAT64,
    ),
    (
        "analysis",
        "localisation_table",
        _LOC_RULE,
        _LOC_RULE.replace("if k is not None", "if (k is not None) and False"),
    ): (
        EQUIVALENT,
        "the rule is read only when k is None",
    ),
    (
        "analysis",
        "feature_overlap_table",
        "return np.kron(np.eye(c), cols) if c > 1 else cols",
        "return np.kron(np.eye(c), cols) if (c > 1) or True else cols",
    ): (EQUIVALENT, "kron(eye(1), cols) is cols"),
    (
        "analysis",
        "feature_overlap_table",
        "return np.kron(np.eye(c), cols) if c > 1 else cols",
        "return np.kron(np.eye(c), cols) if c >= 1 else cols",
    ): (EQUIVALENT, "kron(eye(1), cols) is cols"),
    (
        "analysis",
        "feature_overlap_table",
        "for cl in cliffs.itertuples(index=False):",
        "for cl in cliffs.itertuples(index=None):",
    ): (EQUIVALENT, "None is falsy"),
    (
        "analysis",
        "feature_overlap_table",
        "for cl in cliffs.itertuples(index=False):",
        "for cl in cliffs.itertuples(index=True):",
    ): (EQUIVALENT, "the rows' fields are read by name; an extra Index field changes none of them"),
    (
        "analysis",
        "load_eigen",
        "values[g], vectors[g] = lam.astype(float), vec.astype(float)",
        "values[g], vectors[g] = lam.astype(None), vec.astype(float)",
    ): (EQUIVALENT, _NONE_IS_FLOAT64),
    (
        "analysis",
        "load_eigen",
        "values[g], vectors[g] = lam.astype(float), vec.astype(float)",
        "values[g], vectors[g] = lam.astype(float), vec.astype(None)",
    ): (EQUIVALENT, _NONE_IS_FLOAT64),
    ("claims", "modadd_claims", 'peak = derivative_peak(curve, "sum")', "peak = derivative_peak(curve, )"): (
        EQUIVALENT,
        'derivative_peak\'s default family is "sum"',
    ),
    **{
        ("claims", "modadd_claims", _ATOMS, _ATOMS.replace(old, new)): (
            EQUIVALENT,
            "best_family_match reports a family by its place in the dict, never by its key",
        )
        for old, new in (('"a"', '"XXaXX"'), ('"a"', '"A"'), ('"b"', '"XXbXX"'), ('"b"', '"B"'))
    },
    ("claims", "tms_recovery_claims", _RECOVERED, _RECOVERED.replace("top=v.shape[1]", "top=None")): (
        EQUIVALENT,
        "overlap[:, :None] is every column, as overlap[:, :k] is",
    ),
    (
        "claims",
        "format_scorecard",
        'return f"{shown.to_string(index=False)}\\n{passed} of {len(table)} claims pass"',
        'return f"{shown.to_string(index=None)}\\n{passed} of {len(table)} claims pass"',
    ): (EQUIVALENT, "pandas reads index=None as no index, like False"),
    ("claims", "phase_claims", _PEAK_ROWS, _PEAK_ROWS.replace("astype(bool)", "astype(None)")): (
        NO_CLAIM,
        "differs only for a missing (NaN) peak flag; analyse.py writes a flag on every row",
    ),
    ("claims", "phase_claims", _PHASE_K, _PHASE_K.replace("iloc[0]", "iloc[1]")): (
        EQUIVALENT,
        "phase_table writes one k per layer on each of its (at least two) rows",
    ),
    ("claims", "spectrum_claims", "value >= least,", "value > least,"): (
        NO_CLAIM,
        "differs only for a family overlap exactly equal to its band",
    ),
    ("claims", "modadd_claims", _CLEAN, _CLEAN.replace(">=", ">")): (
        NO_CLAIM,
        "differs only for an atom's correlation exactly equal to rotated_atom_corr",
    ),
    (
        "rotation",
        "_orthonormal_columns",
        "u, s, _ = np.linalg.svd(x, full_matrices=False)",
        "u, s, _ = np.linalg.svd(x, full_matrices=None)",
    ): (EQUIVALENT, "None is falsy: the same thin SVD"),
    (
        "rotation",
        "_orthonormal_columns",
        "if s[-1] <= max(d, k) * np.finfo(np.float64).eps * s[0]:",
        "if s[-1] <= max(d, k) * np.finfo(None).eps * s[0]:",
    ): (EQUIVALENT, _NONE_IS_FLOAT64),
    ("spectrum", "cliff", _CLIFF_READ, _CLIFF_READ.replace("dtype=np.float64", "dtype=None")): (
        EQUIVALENT,
        "the next line's np.maximum with a float64 scalar returns float64 whatever the input's dtype",
    ),
    ("spectrum", "cliff", _CLIFF_READ, _CLIFF_READ.replace("dtype=np.float64", "")): (
        EQUIVALENT,
        "the next line's np.maximum with a float64 scalar returns float64 whatever the input's dtype",
    ),
    (
        "spectrum",
        "cliff",
        "lam = np.maximum(lam, np.finfo(np.float64).tiny)",
        "lam = np.maximum(lam, np.finfo(None).tiny)",
    ): (EQUIVALENT, _NONE_IS_FLOAT64),
    ("spectrum", "cliff", 'with np.errstate(over="ignore"):', "with np.errstate(over=None):"): (
        EQUIVALENT,
        "None leaves numpy's default, which warns on overflow; the ratios and their argmax are the same",
    ),
    ("spectrum", "cliff_scores", "if rise > 1e-8 * top:", "if rise >= 1e-8 * top:"): (
        NO_CLAIM,
        "differs only for a rise of exactly 1e-8 of the top eigenvalue",
    ),
    (
        "spectrum",
        "cliff_scores",
        "p = np.arange(1, lam.size, dtype=np.float64)",
        "p = np.arange(1, lam.size, dtype=None)",
    ): (EQUIVALENT, "1.0 / p is float64 for integer p too"),
    ("spectrum", "cliff_scores", "p = np.arange(1, lam.size, dtype=np.float64)", "p = np.arange(1, lam.size, )"): (
        EQUIVALENT,
        "1.0 / p is float64 for integer p too",
    ),
    ("spectrum", "cliff_scores", "continue", "break"): (
        EQUIVALENT,
        "with window ≥ 2 a drop has fewer than 2 neighbours only when the spectrum has 2 values, i.e. at every drop",
    ),
    ("spectrum", "find_cliffs", "previous = -2", "previous = -3"): (
        EQUIVALENT,
        "previous + 1 is negative either way and never equals an index j ≥ 0",
    ),
    ("spectrum", "find_cliffs", "if candidate.score > cliffs[-1].score:", "if candidate.score >= cliffs[-1].score:"): (
        NO_CLAIM,
        "differs only when two adjacent drops have exactly equal scores",
    ),
}


def scratch_copy(dest: Path) -> None:
    """Copy the tracked and untracked-but-not-ignored files of the working tree to dest."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def mutmut_config(module: str, tests: list[str], top_level: list[str]) -> str:
    """setup.cfg for one module: mutate src/entk/analyses/{module}.py only, run its fast tests only."""

    def lines(values: list[str]) -> str:
        return "".join(f"\n    {v}" for v in values)

    return (
        "[mutmut]\n"
        "source_paths = src\n"
        f"only_mutate = src/entk/analyses/{module}.py\n"
        f"pytest_add_cli_args ={lines(['-m', 'not slow', '-p', 'no:cacheprovider', '-q'])}\n"
        f"pytest_add_cli_args_test_selection ={lines(tests)}\n"
        f"also_copy ={lines(top_level)}\n"
        f"timeout_multiplier = {TIMEOUT_MULTIPLIER}\n"
        "use_git_change_detection = false\n"
    )


def mutmut(args: list[str], cwd: Path, log) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts mutants/src first itself
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    log.write(f"$ mutmut {' '.join(args)}\n{done.stdout}\n{done.stderr}\n")
    log.flush()
    return done.stdout


def changed_lines(diff: str) -> tuple[str, str]:
    """The first removed and the first added source line of a mutant's diff, stripped."""
    before = next((line[1:].strip() for line in diff.splitlines() if re.match(r"-(?!--)", line)), "")
    after = next((line[1:].strip() for line in diff.splitlines() if re.match(r"\+(?!\+\+)", line)), "")
    return before, after


def function_of(mutant: str, module: str) -> str:
    """entk.analyses.analysis.x_phase_table__mutmut_12 → phase_table (methods: xǁClassǁmethod → Class.method)."""
    name = mutant.removeprefix(f"entk.analyses.{module}.").rsplit("__mutmut_", 1)[0]
    return name.removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")


def diffs(names: list[str], module: str, tree: Path) -> list[str]:
    """Each mutant's diff, from one process (``mutmut show`` would start one per mutant)."""
    code = (
        "import sys\nfrom pathlib import Path\nfrom mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        f"for name in sys.argv[1:]:\n    print(get_diff_for_mutant(name, path=Path('src/entk/analyses/{module}.py')))\n"
        "    print('\\0')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *names], cwd=tree, capture_output=True, text=True, check=True)
    return [d.strip() for d in out.stdout.split("\0")[: len(names)]]


def run_module(module: str, tests: list[str], work: Path, log, reuse: bool = False) -> dict:
    """Mutate one module in its own scratch copy; counts per status and the survivors' diffs.
    reuse: read the results of an earlier run kept in work (--keep) instead of running again."""
    tree = work / module
    if not reuse:
        scratch_copy(tree)
    missing = [t for t in tests if not (tree / t).exists()]
    tests = [t for t in tests if t not in missing]
    if not reuse:
        top_level = sorted(p.name for p in tree.iterdir() if p.name not in ("src", "tests"))
        (tree / "setup.cfg").write_text(mutmut_config(module, tests, top_level))
        mutmut(["run", "--max-children", "1"], tree, log)
    status = {}
    for line in mutmut(["results", "--all", "true"], tree, log).splitlines():
        name, _, state = line.strip().rpartition(": ")
        if name.startswith(f"entk.analyses.{module}."):
            status[name] = state
    names = sorted(n for n, s in status.items() if s in ("survived", "no tests", "suspicious"))
    survivors = []
    for name, diff in zip(names, diffs(names, module, tree), strict=True):
        key = (module, function_of(name, module), *changed_lines(diff))
        survivors.append((name, status[name], diff, KNOWN.get(key)))
    counts: dict[str, int] = {}
    for state in status.values():
        counts[state] = counts.get(state, 0) + 1
    return {"tests": tests, "missing": missing, "counts": counts, "survivors": survivors}


def report(results: dict[str, dict], started: datetime.datetime, finished: datetime.datetime) -> str:
    import mutmut as tool

    out = [
        "# Mutation run: entk.analyses: analysis, spectrum, rotation, claims",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M}–{finished:%H:%M} UTC; `python benchmarks/mutation.py` "
        f"(mutmut {getattr(tool, '__version__', '?')}, one mutant at a time, CPU-time limit "
        f"{TIMEOUT_MULTIPLIER:g} × the tests' clean time).",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "shared with other jobs, so the timings are not a benchmark.",
        '- Tests: per module only its fast tests below (`-m "not slow"`), of those only the ones that call '
        "the mutated function. Survived: a bug no fast test of its module would notice; "
        f"{EQUIVALENT}: no input gives a different result; {NO_CLAIM}: only an error message's text, or a result on "
        "inputs the workflow never passes, changes (reason given for each).",
        "",
        f"| module | tests | mutants | killed | timeout | survived | {EQUIVALENT} | {NO_CLAIM} | no tests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for module, r in results.items():
        c = r["counts"]
        kinds = [s[3][0] if s[3] else "survived" for s in r["survivors"] if s[1] == "survived"]
        out.append(
            f"| {module} | {', '.join(Path(t).name for t in r['tests'])} | {sum(c.values())} | "
            f"{c.get('killed', 0)} | {c.get('timeout', 0)} | {kinds.count('survived')} | "
            f"{kinds.count(EQUIVALENT)} | {kinds.count(NO_CLAIM)} | {c.get('no tests', 0)} |"
        )
    for module, r in results.items():
        out += ["", f"## {module}", ""]
        if r["missing"]:
            out.append(f"Test files not found (left out): {', '.join(r['missing'])}.\n")
        if not r["survivors"]:
            out.append("No survivors.")
        for name, state, diff, known in r["survivors"]:
            verdict = f"{known[0]}: {known[1]}" if known else state
            out += [f"### `{name}` ({verdict})", "", "```diff", diff, "```", ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", choices=list(MODULES), default=list(MODULES))
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "MUTATION.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies (their path is printed)")
    parser.add_argument("--reuse", type=Path, help="report on the scratch copies a --keep run left here, as they are")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.UTC)
    work = args.reuse or Path(tempfile.mkdtemp(prefix="entk-mutation-"))
    print(f"scratch copies and mutmut's log under {work}", flush=True)
    results = {}
    with open(work / "mutmut.log", "a") as log:
        for module in args.modules:
            results[module] = run_module(module, MODULES[module], work, log, reuse=args.reuse is not None)
            print(module, results[module]["counts"], flush=True)
    finished = datetime.datetime.now(datetime.UTC)
    if args.reuse is not None:
        # The run's own times: its first setup.cfg written, its last result recorded.
        times = [(work / m / "setup.cfg").stat().st_mtime for m in args.modules]
        times += [p.stat().st_mtime for m in args.modules for p in (work / m / "mutants").rglob("*.meta")]
        started, finished = (datetime.datetime.fromtimestamp(t, datetime.UTC) for t in (min(times), max(times)))
    args.report.write_text(report(results, started, finished))
    print(f"report: {args.report}")
    if not args.keep and args.reuse is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
