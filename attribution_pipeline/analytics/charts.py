"""What the comparison's two renderers share: money formatting and one chart panel per user."""

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path


def cents(value) -> Decimal:
    """``value`` rounded half up to cents."""
    return Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def money(value) -> str:
    """``1,234.50``; ``-`` for None."""
    return "-" if value is None else f"{cents(value):,.2f}"


@contextmanager
def user_panels(users: Sequence, width: float, title: str, empty: str,
                path: str | os.PathLike) -> Iterator[tuple[list, tuple]]:
    """A PNG at ``path`` of one panel per user (one panel saying ``empty`` without users), under
    ``title``: yields the ``(axis, user)`` pairs to draw and the colour cycle, then lays the figure
    out, saves and closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = list(users) or [None]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 4.6 * len(panels)), squeeze=False)
    fig.suptitle(title, fontsize=13)
    drawn = []
    for ax, user in zip(axes[:, 0], panels):
        if user is None:
            ax.text(0.5, 0.5, empty, ha="center", va="center")
            ax.set_axis_off()
        else:
            drawn.append((ax, user))
    try:
        yield drawn, plt.get_cmap("tab10").colors
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def finish_axis(ax, user_id: int, ylabel: str, dollars: str, **legend) -> None:
    """A user's panel: its title, the y axis in dollars (``dollars``: the format's precision, such
    as ``,.2f``), a light grid behind the bars and the legend outside on the right."""
    from matplotlib.ticker import FuncFormatter

    ax.set_title(f"User {user_id}", loc="left", fontsize=11)
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:{dollars}}"))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), **legend)
