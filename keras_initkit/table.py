"""The one table renderer every report's `__str__` (and Markdown form) uses."""


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
