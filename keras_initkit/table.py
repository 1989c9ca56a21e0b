"""The one table renderer every report's `__str__` (and Markdown form) uses, and the
one grouping of layer names into runs of consecutive layers (console and dashboard).

No imports: the dashboard and the CLI load this without Keras.
"""


def consecutive_runs(names, order):
    """`names` grouped into runs of consecutive layers of forward `order`.

    Returns lists of names: each run in forward order (no layer of `order` between
    two neighbours), runs in forward order, then the names `order` lacks, one run
    each, sorted.

    ```python
    consecutive_runs(["c", "a", "b", "e"], ["a", "b", "c", "d", "e"])  # [["a", "b", "c"], ["e"]]
    ```
    """
    rank = {name: i for i, name in enumerate(order)}
    known = sorted({n for n in names if n in rank}, key=rank.__getitem__)
    runs = []
    for name in known:
        if runs and rank[runs[-1][-1]] + 1 == rank[name]:
            runs[-1].append(name)
        else:
            runs.append([name])
    return runs + [[n] for n in sorted({n for n in names if n not in rank})]


def spanned(order, measured, names):
    """The layers of forward `order` a run of one rule's findings (on `names`) may span:
    a run breaks only at a layer the rule `measured` (a collection of names) and did
    not fire on. ConvNeXt's GELU layers do not split a run of its convolutions, nor
    ResNet50's convolutions one of its 53 batch-norm layers."""
    keep = set(measured) | set(names)
    return [name for name in order if name in keep]


# A list of layer names shows at most this many separate runs before counting the rest.
MAX_RUNS = 4


def capped_runs(names, order, limit=MAX_RUNS):
    """`(runs, rest)`: the first `limit` of `consecutive_runs(names, order)`, and how many
    names the runs after them hold (0 when none is left out)."""
    runs = consecutive_runs(names, order)
    return runs[:limit], sum(len(run) for run in runs[limit:])


def render(header, rows, *, markdown=False, title=None):
    """A plain-text (or Markdown) table: first column left-aligned, the rest right.

    Args:
        header: column titles.
        rows: lists of cells (anything `str()` accepts), one per row.
        markdown: a GitHub Markdown table instead of aligned text.
        title: a line above the table.

    ```python
    print(render(["layer", "std"], [["dense", "0.98"]]))
    ```
    """
    header = [str(c) for c in header]
    rows = [[str(c) for c in row] for row in rows]
    lines = [] if title is None else [title]
    if markdown:
        if title is not None:
            lines.append("")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
        for row in rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
