"""Figures from saved results (never from live models): matplotlib + seaborn, colour-blind-safe.

- ``runs``: reading run dirs (config.json, metrics.jsonl, eval.json) and analysis dirs
  (summary.json, queries.parquet, timeseries.csv); ``run_label`` names a run's variant.
- ``training.reward_curves``: GRPO reward and greedy val accuracy vs step (Fig. 1 left).
- ``analysis``: α histograms (Fig. 1 middle), ΔJ by α and co-influence by variant (Fig. 1
  right), influence through training; ``alpha_histogram``/``delta_J_by_alpha`` for one analysis.
- ``gains``: Table 1 (SFT/RFT accuracy and RL gain), the behaviour ablation (Fig. 4), the
  injection-probability sweep.
- ``report.draw_all``: everything a set of dirs supports (``coinfluence plot``).
- ``html_report.build_report``: one self-contained HTML page of a run or an analysis
  (``coinfluence report``).
- ``style``: the theme, the page width, and one name and colour per variant for every figure.

Every drawing function returns its :class:`matplotlib.figure.Figure` and, given ``out_path``,
saves it as PNG and PDF (atomically).
"""
