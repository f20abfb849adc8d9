"""Run the figure units that are missing, then redraw every figure the results support.

    python figures/make_figures.py                                  # vanilla and bridge, seeds 0 1 2
    python figures/make_figures.py --variants explore exploit --seeds 0 1 2
    python figures/make_figures.py --plot-only                      # just redraw from figures/results
    python figures/make_figures.py --rl progress                    # redraw the progress setting's units

A unit (``run_unit.py VARIANT SEED``) is one SFT + GRPO run in the study's setting
(``run_unit.SETTING``) plus its tests and analysis; its small result files land in figures/results/VARIANT-sSEED/ and it is skipped once
they exist, so the set accumulates over several sittings. The figures (PNG + PDF) and Table 1
(table1.md, table1.csv) are drawn from *every* unit under figures/results, not only the ones
listed, by ``coinfluence.plots.report.draw_all`` (the same code as ``coinfluence plot``).
``--rl NAME`` draws the units of an RL setting (``run_unit.py ... --rl NAME``) from
figures/results-rl-NAME/ into figures/rl-NAME/ and runs no unit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run_unit.py beside this file

from run_unit import RL_SETTINGS, ROOT, add_hidden_options, extra_args, parse_variant, rl_roots, run_unit, unit_name  # noqa: E402

from coinfluence.plots.report import NAMES, draw_all  # noqa: E402
from coinfluence.plots.runs import is_run_dir  # noqa: E402

FIGURES = ROOT / "figures"
REWARD_WINDOW = 10  # GRPO reward is a mean over 16 queries × 8 rollouts: noisy step to step


def result_dirs(results_root: Path) -> list[Path]:
    return sorted(p for p in Path(results_root).glob("*") if is_run_dir(p))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run missing figure units, then draw the figures and Table 1.")
    parser.add_argument("--variants", nargs="+", default=["vanilla", "bridge"],
                        help="vanilla, bridge, explore, exploit, question-aug, answer-aug (optionally -peX/-pxY)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--plot-only", action="store_true", help="run no unit; redraw from figures/results")
    parser.add_argument("--rl", choices=sorted(RL_SETTINGS),
                        help="draw the units of this RL setting (figures/results-rl-NAME) into figures/rl-NAME/; runs no unit")
    parser.add_argument("--out", type=Path, help="where the figures and table1.* go (default figures/, or figures/rl-NAME/)")
    add_hidden_options(parser)
    args = parser.parse_args()
    if args.rl:
        args.plot_only, args.results_root = True, rl_roots(args.rl)[1]
    args.out = args.out or (FIGURES / f"rl-{args.rl}" if args.rl else FIGURES)
    for v in args.variants:
        try:
            parse_variant(v)
        except ValueError as err:
            parser.error(str(err))

    if not args.plot_only:
        for variant in args.variants:
            for seed in args.seeds:
                try:
                    run_unit(variant, seed, runs_root=args.runs_root, results_root=args.results_root, extra=extra_args(args))
                except subprocess.CalledProcessError as err:
                    sys.exit(f"unit {unit_name(variant, seed)} failed: exit {err.returncode}; rerun to resume it")

    results = result_dirs(args.results_root)
    if not results:
        sys.exit(f"no results under {args.results_root}; run units first")
    print(f"drawing from {len(results)} unit(s): {', '.join(p.name for p in results)}")
    written = draw_all(results, args.out, reward_window=REWARD_WINDOW)
    for path in written:
        print(f"wrote {path}")
    drawn = {p.stem for p in written}
    missing = [name for name in NAMES if name not in drawn]
    if missing:
        print(f"not drawn (results do not support them yet): {', '.join(missing)}")


if __name__ == "__main__":
    main()
