"""Figure -> E2B chart dict (docs/code-interpreter-api.md §6), matplotlib-dependent part.

Imported lazily by :func:`kernel_bridge.kernel_side.charts.chart_from_figure`
so a kernel that never plots never pays for importing matplotlib. Every
function here may raise; the caller turns any exception into ``{}``.
Key order of every dict follows docs/code-interpreter-api.md §6.13 (it is what
upstream emits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, cast

from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch, Rectangle, Wedge
from matplotlib.text import Text

from kernel_bridge.kernel_side.charts.values import coordinate, plain_scalar, round8, text_or_none, unit_of

Chart = dict[str, Any]


class ExtractionError(ValueError):
    """The figure cannot be described (docs/code-interpreter-api.md §6 says the whole chart is ``{}``)."""


# ---------------------------------------------------------------- top level


def extract(figure: Figure) -> Chart:
    """Describe a figure (docs/code-interpreter-api.md §6.1): ``{}``, one chart, or a superchart."""
    axes = figure.get_axes()
    if not axes or not any(ax.has_data() for ax in axes):
        return {}
    if len(axes) == 1:
        return axes_chart(axes[0])
    return {
        "type": "superchart",
        "title": _suptitle(figure),
        "elements": [axes_chart(ax) for ax in axes],
    }


def _suptitle(figure: Figure) -> str:
    """Suptitle text, ``""`` (not null) when absent: upstream's quirk."""
    if hasattr(figure, "get_suptitle"):  # matplotlib >= 3.8
        return figure.get_suptitle()
    suptitle = getattr(figure, "_suptitle", None)
    return suptitle.get_text() if suptitle is not None else ""


def axes_chart(ax: Axes) -> Chart:
    """Chart of one axes, dispatched on the type decided by docs/code-interpreter-api.md §6.2."""
    builders: dict[str, Callable[[Axes], Chart]] = {
        "line": line_chart,
        "scatter": scatter_chart,
        "bar": bar_chart,
        "pie": pie_chart,
        "box_and_whisker": box_chart,
        "unknown": unknown_chart,
    }
    return builders[chart_type(ax)](ax)


# ------------------------------------------------------------ classification


def _plotted_artists(ax: Axes) -> list[Any]:
    """Artists added by plotting calls, minus texts (docs/code-interpreter-api.md §6.2).

    ``Axes._children`` is private but is exactly the right set (no spines,
    ticks, grid lines, background or legend); the fallback only matters if
    a future matplotlib renames it.
    """
    children = getattr(ax, "_children", None)
    if children is None:
        children = [*ax.lines, *ax.patches, *ax.collections, *ax.images, *ax.artists, *ax.tables]
    return [artist for artist in children if not isinstance(artist, Text)]


def is_grid_like(artist: Any) -> bool:
    """A 2-point horizontal or vertical ``Line2D`` (docs/code-interpreter-api.md §6.12.1), e.g. axhline."""
    if not isinstance(artist, Line2D):
        return False
    xs, ys = _data(artist.get_xdata()), _data(artist.get_ydata())
    if len(xs) != 2 or len(ys) != 2:
        return False
    (x0, x1), (y0, y1) = list(xs), list(ys)
    return bool(x0 == x1 or y0 == y1)


def _data(values: Any) -> Sequence[Any]:
    """Matplotlib's data getters are typed as any array-like; what they return here is a sequence."""
    return cast("Sequence[Any]", values)


def _all(artists: Sequence[Any], *types: type) -> bool:
    return all(isinstance(artist, types) for artist in artists)


def chart_type(ax: Axes) -> str:
    """Decide the chart type of one axes from its artists (docs/code-interpreter-api.md §6.2)."""
    artists = _plotted_artists(ax)
    if _all(artists, Line2D):
        return "line"
    if _all(artists, PathPatch, Line2D):
        return "box_and_whisker"
    data = [artist for artist in artists if not is_grid_like(artist)]
    for kind, artist_type in (("scatter", PathCollection), ("pie", Wedge), ("bar", Rectangle)):
        if _all(data, artist_type):
            return kind
    return "unknown"


# ------------------------------------------------------------ common fields


def _base(kind: str, ax: Axes) -> Chart:
    """``type`` and ``title`` (docs/code-interpreter-api.md §6.3); ``elements`` is filled by callers."""
    return {"type": kind, "title": text_or_none(ax.get_title()), "elements": []}


def _planar_fields(ax: Axes) -> Chart:
    """Axis labels and their units (docs/code-interpreter-api.md §6.4), before any orientation swap."""
    x_label = text_or_none(ax.get_xlabel())
    y_label = text_or_none(ax.get_ylabel())
    return {"x_label": x_label, "y_label": y_label, "x_unit": unit_of(x_label), "y_unit": unit_of(y_label)}


def _swap_axes_fields(chart: Chart) -> None:
    """Exchange x/y labels and units in place (bar and box orientation)."""
    chart["x_label"], chart["y_label"] = chart["y_label"], chart["x_label"]
    chart["x_unit"], chart["y_unit"] = chart["y_unit"], chart["x_unit"]


def _tick_labels(ax: Axes, axis: str) -> list[str]:
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [label.get_text() for label in labels]


def unknown_chart(ax: Axes) -> Chart:
    """Unsupported plot: type and title only (docs/code-interpreter-api.md §6.11)."""
    return _base("unknown", ax)


# -------------------------- point charts (docs/code-interpreter-api.md §6.5)


def _has_date_converter(ax: Axes, axis: str) -> bool:
    """True when the axis was fed dates (matplotlib's default date converter)."""
    mpl_axis = ax.xaxis if axis == "x" else ax.yaxis
    getter = getattr(mpl_axis, "get_converter", None)
    converter = getter() if getter is not None else mpl_axis.converter
    return isinstance(converter, mdates._SwitchableDateConverter)


def _is_number(value: Any) -> bool:
    """Python int/float instance (numpy float64 is one, numpy int64 is not)."""
    return isinstance(value, (int, float))


def _ticks(raw: Sequence[Any], dated: bool) -> list[Any]:
    """Tick positions for JSON: ISO dates, floats, or left as they are."""
    if dated:
        return [mdates.num2date(tick).isoformat() for tick in raw]
    if _is_number(raw[0]):
        return [float(tick) for tick in raw]
    return [plain_scalar(tick) for tick in raw]


def _is_categorical(raw: Sequence[Any], labels: Sequence[str]) -> bool:
    """Ticks 0, 1, 2… labelled with something other than "0", "1", "2"…"""
    return all(
        _is_number(tick) and tick == index and label != str(index)
        for index, (tick, label) in enumerate(zip(raw, labels, strict=False))
    )


def _scale(ax: Axes, axis: str, raw: Sequence[Any], labels: Sequence[str], dated: bool) -> str:
    """Scale name of one axis (docs/code-interpreter-api.md §6.5)."""
    if dated:
        return "datetime"
    scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
    if scale != "linear":
        return scale
    return "categorical" if _is_categorical(raw, labels) else "linear"


def _axis_fields(ax: Axes, axis: str) -> Chart:
    """``<axis>_ticks``, ``<axis>_tick_labels``, ``<axis>_scale``."""
    raw = list(ax.get_xticks() if axis == "x" else ax.get_yticks())
    if not raw:
        raise ExtractionError(f"{axis} axis has no ticks")
    labels = _tick_labels(ax, axis)
    dated = _has_date_converter(ax, axis)
    return {
        f"{axis}_ticks": _ticks(raw, dated),
        f"{axis}_tick_labels": labels,
        f"{axis}_scale": _scale(ax, axis, raw, labels, dated),
    }


def _point_chart(kind: str, ax: Axes, elements: list[Chart]) -> Chart:
    chart = _base(kind, ax)
    chart["elements"] = elements
    chart.update(_planar_fields(ax))
    chart.update(_axis_fields(ax, "x"))
    chart.update(_axis_fields(ax, "y"))
    return chart


def _line_label(line: Line2D) -> str:
    """``_child<N>`` (matplotlib's unlabelled default) -> ``Line <N>``."""
    label = str(line.get_label())
    if label.startswith("_child"):
        return f"Line {label[len('_child') :]}"
    return label


def line_chart(ax: Axes) -> Chart:
    """Line chart: one element per non-grid line, original data (docs/code-interpreter-api.md §6.6)."""
    elements = [
        {
            "label": _line_label(line),
            "points": [
                [coordinate(x), coordinate(y)]
                for x, y in zip(_data(line.get_xdata()), _data(line.get_ydata()), strict=False)
            ],
        }
        for line in ax.get_lines()
        if not is_grid_like(line)
    ]
    return _point_chart("line", ax, elements)


def scatter_chart(ax: Axes) -> Chart:
    """Scatter chart: one element per collection, converted offsets (docs/code-interpreter-api.md §6.7)."""
    elements = [
        {
            "label": collection.get_label(),
            "points": [[coordinate(x), coordinate(y)] for x, y in _data(collection.get_offsets())],
        }
        for collection in ax.collections
    ]
    return _point_chart("scatter", ax, elements)


# ----------------------------------- bar (docs/code-interpreter-api.md §6.8)


def _group_name(container: BarContainer) -> str:
    """``_container<N>`` (matplotlib's unlabelled default) -> ``Group <N>``."""
    label = str(container.get_label())
    if label.startswith("_container"):
        return f"Group {label[len('_container') :]}"
    return label


def _bar_elements(ax: Axes, container: BarContainer, chart: Chart) -> list[Chart]:
    """Elements of one container; equal heights mean horizontal bars.

    The orientation guess mutates ``chart`` (label swap) per container,
    like upstream, so two horizontal containers swap back.
    """
    bars = list(container.patches)
    heights = [bar.get_height() for bar in bars]
    if all(height == heights[0] for height in heights):
        _swap_axes_fields(chart)
        labels = _tick_labels(ax, "y")
        values = [bar.get_width() for bar in bars]
    else:
        labels = _tick_labels(ax, "x")
        values = heights
    group = _group_name(container)
    return [
        {"label": label, "group": group, "value": float(value)} for label, value in zip(labels, values, strict=False)
    ]


def bar_chart(ax: Axes) -> Chart:
    """Bar chart: one element per bar of every ``BarContainer`` (docs/code-interpreter-api.md §6.8)."""
    chart = _base("bar", ax)
    chart.update(_planar_fields(ax))
    for container in ax.containers:
        if isinstance(container, BarContainer):
            chart["elements"].extend(_bar_elements(ax, container, chart))
    return chart


# ---------------------------------- pie (docs/code-interpreter-api.md §6.10)


def pie_chart(ax: Axes) -> Chart:
    """Pie chart: label, angle (8-digit rounded) and radius per wedge."""
    chart = _base("pie", ax)
    for wedge in ax.patches:
        if not isinstance(wedge, Wedge):
            raise ExtractionError(f"pie chart with a {type(wedge).__name__} patch")
        angle = Decimal(float(wedge.theta2)) - Decimal(float(wedge.theta1))  # float32 on mpl 3.10
        chart["elements"].append(
            {
                "label": wedge.get_label(),
                "angle": abs(round8(angle)),
                "radius": float(wedge.r),
            }
        )
    return chart


# ----------------------- box and whisker (docs/code-interpreter-api.md §6.9)


class _Box:
    """A box in data coordinates plus what the lines tell about it."""

    def __init__(self, label: str, x: float, y: float, width: float, height: float) -> None:
        self.label = label
        self.x, self.y, self.width, self.height = x, y, width, height
        self.median: float | None = None
        self.low: float | None = None
        self.high: float | None = None
        self.outliers: list[float] = []

    def flip(self) -> None:
        """Swap axes for horizontal boxes."""
        self.x, self.y = self.y, self.x
        self.width, self.height = self.height, self.width

    @property
    def right(self) -> float:
        return round8(self.x + self.width)

    @property
    def top(self) -> float:
        return round8(self.y + self.height)

    def spans(self, x: float) -> bool:
        return self.x <= x <= self.right

    def element(self) -> Chart:
        if self.median is None or self.low is None or self.high is None:
            raise ExtractionError(f"box {self.label!r} is incomplete")
        return {
            "label": self.label,
            "min": self.low,
            "first_quartile": self.y,
            "median": self.median,
            "third_quartile": self.top,
            "max": self.high,
            "outliers": self.outliers,
        }


def _box_from_patch(label: str, patch: Patch) -> _Box:
    """Bounding box of the patch's rounded vertices.

    Width and height are rounded too: float noise such as
    ``1.075 - 0.925 != 2.075 - 1.925`` would otherwise defeat the
    equal-height test that recognises horizontal boxes.
    """
    vertices = _data(patch.get_path().vertices)
    xs = [round8(x) for x, _ in vertices]
    ys = [round8(y) for _, y in vertices]
    x, y = min(xs), min(ys)
    return _Box(label, x, y, round8(max(xs) - x), round8(max(ys) - y))


def _rounded_points(line: Line2D, flipped: bool) -> list[tuple[float, float]]:
    xs = [round8(x) for x in _data(line.get_xdata())]
    ys = [round8(y) for y in _data(line.get_ydata())]
    return list(zip(ys, xs, strict=False)) if flipped else list(zip(xs, ys, strict=False))


def _apply_outlier(boxes: list[_Box], point: tuple[float, float]) -> None:
    x, y = point
    box = next((box for box in boxes if box.spans(x)), None)
    if box is not None:
        box.outliers.append(y)


def _apply_segment(boxes: list[_Box], start: tuple[float, float], end: tuple[float, float]) -> None:
    """A 2-point line is a median, a whisker, or (ignored) a cap."""
    (x0, y0), (x1, y1) = start, end
    box = next((box for box in boxes if box.x <= x0 <= x1 <= box.right), None)
    if box is None:
        return
    if y0 == y1 and box.y <= y0 <= box.top:
        box.median = y0
        return
    low, high = min(y0, y1), max(y0, y1)
    if high == box.y:
        box.low = low
    elif low == box.top:
        box.high = high


def box_chart(ax: Axes) -> Chart:
    """Box-and-whisker chart from box patches and their lines (docs/code-interpreter-api.md §6.9)."""
    chart = _base("box_and_whisker", ax)
    chart.update(_planar_fields(ax))
    labels = _tick_labels(ax, "x")
    boxes = [_box_from_patch(label, patch) for label, patch in zip(labels, ax.patches, strict=False)]
    flipped = all(box.height == boxes[0].height for box in boxes)
    if flipped:
        _swap_axes_fields(chart)
        for box in boxes:
            box.flip()
    for line in ax.lines:
        points = _rounded_points(line, flipped)
        if len(points) == 1:
            _apply_outlier(boxes, points[0])
        elif len(points) == 2:
            _apply_segment(boxes, points[0], points[1])
    chart["elements"] = [box.element() for box in boxes]
    return chart
