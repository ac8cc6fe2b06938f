"""Reporting: one seaborn theme, tables written as CSV + Markdown, image grids.

``dptlib`` computes; notebooks decide what to show. These helpers only format and save.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from dptlib.config import figures_dir
from dptlib.evaluation.stats import format_difference, format_interval, sizes_differ, verdict


def set_theme() -> None:
    """The one plotting style of every figure in ``figures/``, and tables shown whole (no cell cut at
    50 characters, no column or row elided)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.max_rows", 500)
    pd.set_option("display.width", 250)


@contextlib.contextmanager
def toy_rows(scale: str):
    """Around a cell that reads rows only the toy scale's batches make (an ablation's findings):
    at another scale, where a batch runs its first variants only, a missing row is one printed line
    instead of an error; at the toy scale every error propagates."""
    try:
        yield
    except (KeyError, IndexError, NameError, TypeError, ValueError, FileNotFoundError, ZeroDivisionError) as missing:
        if scale == "toy":
            raise
        print(f"(this cell reads rows the {scale} scale does not make; at the toy scale it shows them: "
              f"{type(missing).__name__}: {str(missing)[:120]})")


def prose(text: str):
    """Markdown computed by a notebook: its numbers come from variables, so the prose cannot go stale.

    ``report.prose(f"ITM reaches {itm:.1f} %")`` shows as a paragraph (``IPython.display.Markdown``)."""
    from IPython.display import Markdown  # deferred: IPython is there only in a notebook kernel

    return Markdown(text)


def _flat(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``table`` with its row labels as leading columns and flat column names, and how many label columns."""
    labels = 0 if isinstance(table.index, pd.RangeIndex) else table.index.nlevels
    flat = table.copy() if labels == 0 else table.reset_index()
    if isinstance(flat.columns, pd.MultiIndex):  # ("mean", "correct") -> "mean correct"
        flat.columns = [" ".join(str(part) for part in column if str(part)) for column in flat.columns]
    return flat, labels


def markdown_table(table: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """``table`` as GitHub Markdown, row labels as leading columns written as they are (an eta
    of 0.03, a timestep of 250 are names, not measurements in the float format)."""
    flat, labels = _flat(table)
    for column in flat.columns[:labels]:
        flat[column] = [f"{v:g}" if isinstance(v, float) else str(v) for v in flat[column]]
    return flat.to_markdown(index=False, floatfmt=floatfmt, disable_numparse=list(range(labels))) + "\n"


def save_table(table: pd.DataFrame, name: str, scale: str, floatfmt: str = ".3f") -> tuple[Path, Path]:
    """Write ``table`` as ``<name>.csv`` and ``<name>.md`` into the scale's figures folder."""
    folder = figures_dir(scale)
    csv_path, md_path = folder / f"{name}.csv", folder / f"{name}.md"
    _flat(table)[0].to_csv(csv_path, index=False)
    md_path.write_text(markdown_table(table, floatfmt))
    return csv_path, md_path


def replace_between_markers(path: Path, name: str, text: str) -> None:
    """Replace what lies between the lines ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` of
    the file at ``path`` with ``text`` (a ``ValueError`` if the markers are missing)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = Path(path).read_text()
    if content.count(begin) != 1 or content.count(end) != 1 or content.index(begin) > content.index(end):
        raise ValueError(f"{path}: expected one '{begin}' line before one '{end}' line")
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    Path(path).write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")


def save_figure(figure: plt.Figure, name: str, scale: str) -> None:
    """Write ``figure`` as ``<name>.png`` into the scale's figures folder. Returns nothing, so a
    notebook cell that ends with it shows the figure, not its path."""
    figure.savefig(figures_dir(scale) / f"{name}.png")


def image_grid(
    images: list[np.ndarray],
    titles: list[str] | None = None,
    boxes: list[list[tuple]] | None = None,
    ncols: int = 6,
    cell_inches: float = 1.9,
    title_size: float = 7,
) -> plt.Figure:
    """A grid of uint8 RGB images (H, W, 3) with optional titles and (x0, y0, x1, y1) boxes."""
    nrows = int(np.ceil(len(images) / ncols))
    figure, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell_inches, nrows * (cell_inches + 0.35)), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(images):
            continue
        ax.imshow(images[k], interpolation="nearest")
        if titles:
            ax.set_title(titles[k], fontsize=title_size, wrap=True)
        for x0, y0, x1, y1 in (boxes[k] if boxes else []):
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, ec="white"))
    figure.tight_layout()
    return figure


def interval_table(comparison: pd.DataFrame, column: str, digits: int = 1) -> pd.DataFrame:
    """Rows: methods; columns: the values of ``column`` (a cell level of the index); entries:
    "mean [low, high]" from :func:`dptlib.evaluation.stats.compare_to_baseline`'s output."""
    text = comparison.apply(lambda r: format_interval(r["mean"], r["low"], r["high"], digits), axis=1)
    return _pivot(text, comparison, column)


def difference_table(comparison: pd.DataFrame, column: str, digits: int = 1) -> pd.DataFrame:
    """Like :func:`interval_table` for the paired difference to the baseline: "+d [low, high]
    (p = ...)", "—" in the baseline's row."""
    text = comparison.apply(lambda r: format_difference(r["diff"], r["diff_low"], r["diff_high"], r["p"], digits), axis=1)
    return _pivot(text, comparison, column)


def _pivot(text: pd.Series, comparison: pd.DataFrame, column: str) -> pd.DataFrame:
    # methods in the order of their first row in any cell (compare_to_baseline's method order)
    order = {m: i for i, m in enumerate(comparison.attrs.get("methods", []))}
    methods = sorted(dict.fromkeys(comparison.index.get_level_values(-1)), key=lambda m: order.get(m, len(order)))
    cells = list(dict.fromkeys(comparison.index.get_level_values(column)))
    table = text.unstack(column) if comparison.index.nlevels == 2 else text.droplevel(
        [n for n in comparison.index.names[:-1] if n != column]).unstack(column)
    return table.reindex(index=methods, columns=cells).fillna("")


def claim_row(claim: str, paper: str, row: pd.Series, expected_sign: int = +1, control: bool = False, digits: int = 1) -> dict:
    """One line of the claims table from a :func:`dptlib.evaluation.stats.compare_to_baseline` row (its
    ``diff``, ``diff_low``, ``diff_high``, ``p``, ``n``): the claim, the paper's number, the toy
    difference with its 95 % interval, and the verdict: "holds" / "contradicted" /
    "inconclusive" (:func:`dptlib.evaluation.stats.verdict`), or for a control that must show nothing,
    "no effect" (the interval contains 0) or "effect"."""
    low, high = row["diff_low"], row["diff_high"]
    judged = ("no effect" if low <= 0 <= high else "effect") if control else verdict(low, high, expected_sign)
    return {"claim": claim, "paper": paper, "toy (difference, 95 % interval)": format_difference(row["diff"], low, high, row["p"], digits),
            "n": int(row["n"]), "verdict": judged}


def variant_table(generation: pd.DataFrame, discrimination: pd.DataFrame, differences: bool = False, digits: int = 1) -> pd.DataFrame:
    """An ablation's table from :func:`dptlib.experiments.ablations.compare_variants`: one row per variant
    (and per self-corrected variant, "<variant> + SC"), discrimination tasks then generation cells
    as columns; each entry the mean with its 95 % interval, or with ``differences=True`` the
    paired difference to the reference. Empty where a variant was not measured on a column."""
    pivot = difference_table if differences else interval_table
    parts = [pivot(comparison, level, digits) for comparison, level in ((discrimination, "task"), (generation, "cell"))
             if not comparison.empty]
    if not parts:
        return pd.DataFrame()
    order = list(dict.fromkeys(name for part in reversed(parts) for name in part.index))
    return pd.concat(parts, axis=1).reindex(order).fillna("")


def save_variant_tables(generation: pd.DataFrame, discrimination: pd.DataFrame, name: str, index_name: str,
                        scale: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables of an ablation batch (:func:`variant_table`), saved in the scale's figures folder:
    the means with their 95 % intervals as ``name``, the paired differences to the references as
    ``<name>_differences``; the rows are named ``index_name``. Returns (means, differences)."""
    means, differences = (variant_table(generation, discrimination, differences=d) for d in (False, True))
    save_table(means.rename_axis(index_name), name, scale)
    save_table(differences.rename_axis(index_name), f"{name}_differences", scale)
    return means, differences


def interval_plot(comparison: pd.DataFrame, x: str, col: str, hue: str | None = None, ylabel: str = "%",
                  order: list[str] | None = None, height: float = 2.6) -> sns.FacetGrid:
    """Means with their 95 % intervals (the ``mean``, ``low``, ``high`` columns of
    :func:`dptlib.evaluation.stats.compare_to_baseline`) as points with error bars: ``x`` and ``col`` (and
    ``hue``) are columns or index levels of ``comparison``. The intervals are the tables' own,
    not seaborn's re-estimate."""
    frame = comparison.reset_index()
    grid = sns.FacetGrid(frame, col=col, hue=hue, sharey=False, height=height, aspect=1.3)
    positions = {name: i for i, name in enumerate(order or list(dict.fromkeys(frame[x])))}

    def draw(data, color, label=None, **_):
        xs = data[x].map(positions)
        plt.errorbar(xs, data["mean"], yerr=[data["mean"] - data["low"], data["high"] - data["mean"]], fmt="o", color=color,
                     label=label, capsize=2, markersize=4)

    grid.map_dataframe(draw)
    grid.set(xticks=list(positions.values()), ylabel=ylabel, xlabel="")
    for ax in grid.axes.flat:
        ax.set_xticklabels(list(positions), rotation=60, ha="right")
    if hue:
        grid.add_legend()
    return grid


def parse_interval(cell: str) -> tuple[float, float, float]:
    """'32.2 [28.1, 36.4]' (:func:`dptlib.evaluation.stats.format_interval`) -> (32.2, 28.1, 36.4); NaNs for
    anything else (an empty cell, '—')."""
    found = re.fullmatch(r"\s*([+-]?[\d.]+) \[([+-]?[\d.]+), ([+-]?[\d.]+)\]\s*", str(cell))
    return tuple(float(v) for v in found.groups()) if found else (float("nan"),) * 3


def interval_long(table: pd.DataFrame) -> pd.DataFrame:
    """A table of formatted means with intervals (rows: variants, columns: panels, as
    :func:`save_variant_tables` writes) as long rows (panel, variant, mean, low, high), empty
    cells dropped: what :func:`variant_plot` draws, rebuilt from a saved table."""
    rows = [(panel, variant, *parse_interval(table.at[variant, panel])) for panel in table.columns for variant in table.index]
    frame = pd.DataFrame(rows, columns=["panel", "variant", "mean", "low", "high"]).dropna(subset=["mean"])
    return frame.set_index(["panel", "variant"])


SC_SUFFIX = " + SC"


def variant_plot(comparison: pd.DataFrame, order: list[str], reference: str | None = "base", line: list[str] | None = None,
                 xlabel: str = "", ylabel: str = "%", ncols: int = 3) -> plt.Figure:
    """An ablation's figure, drawn as the paper draws Fig. 3: one panel per metric (``comparison``
    indexed by (panel, variant) with ``mean``, ``low``, ``high``: the tables' own 95 % intervals),
    the swept setting on the x axis (a variant "<setting> + SC" is the self-corrected twin of
    "<setting>", drawn at the same x in its own colour), each panel showing only the settings it
    has. ``reference`` (the base model) is a dashed line with its interval shaded, not a point;
    the settings in ``line`` (an ordered sweep: blocks bottom to top, ranks) are joined by a line;
    the others (fusions, other recipes) stand apart at the right."""
    frame = comparison.reset_index()
    frame["setting"] = frame["variant"].str.removesuffix(SC_SUFFIX)
    frame["method"] = np.where(frame["variant"].str.endswith(SC_SUFFIX), "self-corrected", "plain")
    settings = [s for s in dict.fromkeys(v.removesuffix(SC_SUFFIX) for v in order) if s != reference]
    line = [s for s in (line or []) if s in settings]
    settings = line + [s for s in settings if s not in line]
    names = list(dict.fromkeys(frame["panel"]))
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    colours = dict(zip(["plain", "self-corrected"], sns.color_palette(n_colors=2)))
    labels = {"plain": "without self-correction", "self-corrected": "with self-correction (Eq. 9)"}
    for ax, name in zip(axes.flat, names):
        panel = frame[frame["panel"] == name]
        shown = [s for s in settings if s in set(panel["setting"])]
        x = {s: i + (0.5 if s not in line and line else 0) for i, s in enumerate(shown)}
        base = panel[panel["setting"] == reference]
        if not base.empty:
            mean, low, high = base.iloc[0][["mean", "low", "high"]]
            ax.axhline(mean, color="0.3", ls="--", lw=1, label="base model (shaded: its 95 % interval)")
            ax.axhspan(low, high, color="0.3", alpha=0.12, lw=0)
        methods = [m for m in colours if m in set(panel.loc[panel["setting"] != reference, "method"])]
        for k, method in enumerate(methods):
            rows = panel[(panel["method"] == method) & panel["setting"].isin(shown)].set_index("setting").reindex(
                [s for s in shown if s in set(panel.loc[panel["method"] == method, "setting"])])
            offset = (k - (len(methods) - 1) / 2) * 0.15
            xs = np.array([x[s] for s in rows.index]) + offset
            ax.errorbar(xs, rows["mean"], yerr=[rows["mean"] - rows["low"], rows["high"] - rows["mean"]], fmt="o",
                        color=colours[method], capsize=2, markersize=4, label=labels[method])
            joined = [i for i, s in enumerate(rows.index) if s in line]
            ax.plot(xs[joined], rows["mean"].to_numpy()[joined], color=colours[method], lw=1)
        ax.set_xticks(list(x.values()), [_setting_label(s) for s in x], rotation=45, ha="right")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), frameon=False,
                  bbox_to_anchor=(0.5, -0.02))
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def _setting_label(setting: str) -> str:
    """A tick label: "lora_rank=4" -> "4" (the x axis names the parameter), others as they are."""
    return setting.split("=", 1)[1] if "=" in setting else setting


ONE_RUN_COLUMNS = ["claim", "paper", "toy (difference, 95 % interval)", "n", "on test items", "family size", "size vs paper", "verdict"]


def leading_number(text: str) -> float:
    """The signed number a cell starts with ("+6.3 (38.5 vs 32.2)" -> 6.3), nan if none."""
    found = re.match(r"\s*([+-]\d+(?:\.\d+)?)", str(text))
    return float(found.group(1)) if found else float("nan")


def one_run_verdicts(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims of single training runs (:func:`claim_row`'s table, gathered by 09_results) as
    verdicts that say what one run can: the old verdict, from intervals over test items alone,
    moves to "on test items"; the verdict reads "one run" (no claim holds on one training run:
    the seeds batch's table gives verdicts), or "selected on these images" where the setting was
    chosen on the images that measure it (Fig. 4b's eta). "family size": the claims of the same
    table (what a multiple-comparison adjustment would divide by); "size vs paper": the toy's
    difference more than 3x the paper's or under a third of it ("differs > 3x"), from the two
    cells' leading numbers."""
    out = claims.rename(columns={"verdict": "on test items"}).copy()
    family = out["claim"].str.split(":").str[0].str.strip()
    if "notebook" in out:  # a table's claims are those one notebook tests
        family = out["notebook"] + " / " + family
    out["family size"] = family.map(family.value_counts()).astype(int)
    toy, paper = out["toy (difference, 95 % interval)"].map(leading_number), out["paper"].map(leading_number)
    out["size vs paper"] = [("differs > 3x" if sizes_differ(t, p) else "within 3x") if not (np.isnan(t) or np.isnan(p)) else ""
                            for t, p in zip(toy, paper)]
    selected = out["claim"].str.startswith("Fig. 4b")
    out["verdict"] = np.where(selected, "selected on these images", "one run")
    return out[ONE_RUN_COLUMNS + [c for c in out.columns if c not in ONE_RUN_COLUMNS]]
