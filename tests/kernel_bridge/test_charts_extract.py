"""In-process tests of the kernel-side chart extractor (docs/code-interpreter-api.md §6).

Real matplotlib figures (Agg backend) go through ``chart_from_figure``; the
result is compared value by value with what docs/code-interpreter-api.md §6
says upstream emits, and is also fed, after a JSON round trip, to the official
SDK's own chart deserialiser so the typed classes the users see are checked
too.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from e2b_code_interpreter.charts import (  # noqa: E402
    BarChart,
    BoxAndWhiskerChart,
    Chart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
    ScatterChart,
    SuperChart,
)
from e2b_code_interpreter.models import Result  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from kernel_bridge.kernel_side import charts  # noqa: E402
from kernel_bridge.kernel_side.charts import chart_from_figure  # noqa: E402
from kernel_bridge.kernel_side.charts.values import (  # noqa: E402
    coordinate,
    round8,
    unit_of,
)

POINT_KEYS = [
    "type",
    "title",
    "elements",
    "x_label",
    "y_label",
    "x_unit",
    "y_unit",
    "x_ticks",
    "x_tick_labels",
    "x_scale",
    "y_ticks",
    "y_tick_labels",
    "y_scale",
]
PLANAR_KEYS = ["type", "title", "elements", "x_label", "y_label", "x_unit", "y_unit"]


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def sdk_chart(chart: dict[str, Any]) -> Any:
    """What a user gets: the dict as JSON on the wire, then the SDK's Result."""
    wire = json.loads(json.dumps(chart, allow_nan=False))
    assert wire == chart  # JSON-clean: no numpy scalars, no tuples
    return Result(chart=wire).chart


def all_floats(values: Any) -> bool:
    return all(type(value) is float for value in values)


# ------------------------------------------------------------------ helpers


class TestValues:
    @pytest.mark.parametrize(
        "value, expected",
        [
            (324.00000000000006, 324.0),
            (84.75, 84.75),
            (0.05, 0.05),
            (123456.789, 123000.0),
            (1.00000005, 1.0),  # half-even: 8th digit 0 stays
            (1.00000015, 1.0000002),  # half-even: 8th digit 1 goes up
            (-2.123456789, -2.1234568),
            (0.0, 0.0),
            (7, 7.0),
        ],
    )
    def test_round8(self, value: float, expected: float) -> None:
        result = round8(value)
        assert result == expected
        assert type(result) is float

    @pytest.mark.parametrize(
        "label, unit",
        [
            ("Time (s)", "s"),
            ("Amplitude (Hz)", "Hz"),
            ("Y-axis (log scale)", "log scale"),
            ("Value [kg]", "kg"),
            ("X-axis", None),
            ("f(x)", None),
            ("Empty ()", None),
            (None, None),
            ("", None),
        ],
    )
    def test_unit_of(self, label: Any, unit: Any) -> None:
        assert unit_of(label) == unit

    def test_coordinate(self) -> None:
        tz = datetime.timezone(datetime.timedelta(hours=2))
        assert coordinate(datetime.date(2023, 9, 1)) == "2023-09-01"
        assert coordinate(datetime.datetime(2024, 1, 1, 10)) == "2024-01-01T10:00:00"
        aware = datetime.datetime(2024, 1, 1, 10, tzinfo=tz)
        assert coordinate(aware) == "2024-01-01T10:00:00+02:00"
        assert coordinate(pd.Timestamp("2024-01-01 10:00")) == "2024-01-01T10:00:00"
        assert coordinate(np.datetime64("2024-01-01T10:00:00.750")) == "2024-01-01T10:00:00"
        assert coordinate(np.datetime64("2024-01-02")) == "2024-01-02T00:00:00"
        assert coordinate("A") == "A"
        for number in (1, np.int64(1), np.float32(1.0), True):
            assert coordinate(number) == 1.0 and type(coordinate(number)) is float


# --------------------------------- blank (docs/code-interpreter-api.md §6.1)


def test_blank_figures_give_empty_chart() -> None:
    assert chart_from_figure(Figure()) == {}
    fig, _ = plt.subplots()
    assert chart_from_figure(fig) == {}
    fig, _ = plt.subplots(1, 2)
    fig.suptitle("Still blank")
    assert chart_from_figure(fig) == {}
    assert Result(chart=chart_from_figure(fig)).chart is None


# ------------------------------------------------------------------- line


def test_line_matches_upstream_observation() -> None:
    fig = plt.figure()
    plt.plot([1, 2], [3, 4])
    chart = chart_from_figure(fig)
    assert list(chart) == POINT_KEYS
    assert chart["type"] == "line"
    assert chart["title"] is None
    assert chart["elements"] == [{"label": "Line 0", "points": [[1.0, 3.0], [2.0, 4.0]]}]
    assert [chart[k] for k in ("x_label", "y_label", "x_unit", "y_unit")] == [None] * 4
    assert chart["x_ticks"] == [0.8, 1.0, 1.2000000000000002, 1.4000000000000001, 1.6, 1.8, 2.0, 2.2]  # not rounded
    assert chart["x_tick_labels"] == ["0.8", "1.0", "1.2", "1.4", "1.6", "1.8", "2.0", "2.2"]
    assert chart["y_ticks"][0] == 2.8000000000000003 and chart["y_ticks"][-1] == 4.2
    assert chart["x_scale"] == chart["y_scale"] == "linear"
    assert all_floats(chart["x_ticks"] + chart["y_ticks"])
    assert all_floats(chart["elements"][0]["points"][0])


def test_line_datetime_x_axis() -> None:
    """SDK ``test_line``: dates on x, units from labels, two named lines."""
    x = [datetime.date(2023, 9, 1) + datetime.timedelta(days=i) for i in range(100)]
    t = np.linspace(0, 2 * np.pi, 100)
    fig = plt.figure(figsize=(10, 6))
    plt.plot(x, np.sin(t), label="sin(x)")
    plt.plot(x, np.cos(t), label="cos(x)")
    plt.xlabel("Time (s)")
    plt.ylabel("Amplitude (Hz)")
    plt.title("Plot of sin(x) and cos(x)")
    chart = chart_from_figure(fig)

    assert chart["title"] == "Plot of sin(x) and cos(x)"
    assert (chart["x_unit"], chart["y_unit"]) == ("s", "Hz")
    assert (chart["x_scale"], chart["y_scale"]) == ("datetime", "linear")
    assert chart["x_ticks"][0] == "2023-09-01T00:00:00+00:00"
    assert chart["x_tick_labels"][0] == "2023-09-01"
    for tick in chart["x_ticks"]:
        assert datetime.datetime.fromisoformat(tick).tzinfo == datetime.timezone.utc
    assert all_floats(chart["y_ticks"])
    assert chart["y_tick_labels"][0].startswith("\u2212")  # matplotlib's minus sign
    sin, cos = chart["elements"]
    assert (sin["label"], cos["label"]) == ("sin(x)", "cos(x)")
    assert len(sin["points"]) == len(cos["points"]) == 100
    assert sin["points"][0] == ["2023-09-01", 0.0]
    assert cos["points"][0] == ["2023-09-01", 1.0]
    assert sin["points"][-1][0] == "2023-12-09"

    sdk = sdk_chart(chart)
    assert isinstance(sdk, LineChart)
    assert sdk.x_scale == ScaleType.DATETIME and sdk.y_scale == ScaleType.LINEAR
    assert sdk.elements[1].label == "cos(x)"
    assert sdk.elements[0].points[1] == ("2023-09-02", pytest.approx(math.sin(t[1])))


def test_line_numpy_datetime64_and_pandas_points() -> None:
    fig = plt.figure()
    stamps = np.array(["2024-01-01T10:00:00.5", "2024-01-02"], dtype="datetime64[ms]")
    plt.plot(stamps, [1, 2])
    plt.plot(pd.Series(pd.to_datetime(["2024-01-01 12:00", "2024-01-01 18:00"])), pd.Series([3, 4]))
    chart = chart_from_figure(fig)
    assert chart["x_scale"] == "datetime"
    assert chart["elements"][0]["points"] == [["2024-01-01T10:00:00", 1.0], ["2024-01-02T00:00:00", 2.0]]
    assert chart["elements"][1]["points"] == [["2024-01-01T12:00:00", 3.0], ["2024-01-01T18:00:00", 4.0]]


def test_line_log_scale_with_grid() -> None:
    """SDK ``test_log_chart``: log y axis, unit from label, grid adds nothing."""
    x = np.linspace(0, 100, 100)
    fig = plt.figure(figsize=(10, 6))
    plt.plot(x, np.exp(x), label="y = e^x")
    plt.yscale("log")
    plt.title("Exponential Growth")
    plt.xlabel("X-axis")
    plt.ylabel("Y-axis (log scale)")
    plt.grid(True)
    chart = chart_from_figure(fig)

    assert (chart["x_label"], chart["y_label"]) == ("X-axis", "Y-axis (log scale)")
    assert (chart["x_unit"], chart["y_unit"]) == (None, "log scale")
    assert (chart["x_scale"], chart["y_scale"]) == ("linear", "log")
    assert all_floats(chart["x_ticks"] + chart["y_ticks"])
    # Each label is matplotlib's rendering of its own tick (which ticks it
    # picks depends on the matplotlib version).
    assert len(chart["y_tick_labels"]) == len(chart["y_ticks"]) > 2
    for tick, label in zip(chart["y_ticks"], chart["y_tick_labels"], strict=True):
        assert label == f"$\\mathdefault{{10^{{{round(math.log10(tick))}}}}}$"
    assert len(chart["elements"]) == 1
    line = chart["elements"][0]
    assert line["label"] == "y = e^x" and len(line["points"]) == 100
    assert line["points"][0] == [0.0, 1.0]
    assert line["points"][-1] == [100.0, math.exp(100.0)]

    sdk = sdk_chart(chart)
    assert isinstance(sdk, LineChart) and sdk.y_scale == ScaleType.LOG
    assert len(sdk.elements) == 1 and sdk.elements[0].label == "y = e^x"


def test_grid_lines_are_not_data() -> None:
    """Grid lines (and axhline/axvline) never become elements; numbering follows children."""
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0, 1, 4])
    ax.axhline(2)
    ax.plot([0, 1, 2], [4, 1, 0])
    ax.axvline(1)
    ax.grid(True, which="both")
    ax.minorticks_on()
    chart = chart_from_figure(fig)
    assert chart["type"] == "line"
    assert [e["label"] for e in chart["elements"]] == ["Line 0", "Line 2"]
    assert chart["elements"][1]["points"] == [[0.0, 4.0], [1.0, 1.0], [2.0, 0.0]]


def test_two_point_sloped_line_is_data() -> None:
    fig = plt.figure()
    plt.plot([0, 1], [0, 1], label="diagonal")
    chart = chart_from_figure(fig)
    assert chart["elements"] == [{"label": "diagonal", "points": [[0.0, 0.0], [1.0, 1.0]]}]


def test_categorical_y_axis() -> None:
    """SDK ``test_scale``: string y data -> categorical, strings kept in points."""
    fig = plt.figure(figsize=(10, 6))
    plt.plot([1, 2, 3, 4, 5], ["A", "B", "C", "D", "E"])
    chart = chart_from_figure(fig)
    assert (chart["x_scale"], chart["y_scale"]) == ("linear", "categorical")
    assert chart["y_ticks"] == [0.0, 1.0, 2.0, 3.0, 4.0] and all_floats(chart["y_ticks"])
    assert chart["y_tick_labels"] == ["A", "B", "C", "D", "E"]
    assert chart["elements"][0]["points"][:2] == [[1.0, "A"], [2.0, "B"]]
    sdk = sdk_chart(chart)
    assert sdk.y_scale == ScaleType.CATEGORICAL and sdk.elements[0].points[4] == (5.0, "E")


def test_fixed_integer_ticks_stay_integers() -> None:
    """``plt.xticks([0, 1, 2], labels)``: numpy ints are kept (JSON integers), scale linear."""
    fig = plt.figure()
    plt.plot([0, 1, 2], [5, 6, 7])
    plt.xticks([0, 1, 2], ["a", "b", "c"])
    chart = chart_from_figure(fig)
    assert chart["x_ticks"] == [0, 1, 2]
    assert all(type(t) is int for t in chart["x_ticks"])
    assert chart["x_tick_labels"] == ["a", "b", "c"]
    assert chart["x_scale"] == "linear"


def test_categorical_test_compares_labels_with_positions() -> None:
    """Float ticks 0, 1, 2 labelled "0", "1", "2" are numeric; labelled otherwise, categorical."""
    fig, (numeric, quirk) = plt.subplots(1, 2)
    numeric.plot([0, 1, 2], [1, 2, 3])
    numeric.set_xticks([0.0, 1.0, 2.0])
    quirk.plot([0, 1, 2], [1, 2, 3])
    quirk.set_xticks([0.0, 1.0, 2.0], ["0.0", "1.0", "2.0"])
    first, second = chart_from_figure(fig)["elements"]
    assert first["x_tick_labels"] == ["0", "1", "2"]
    assert first["x_scale"] == "linear"
    assert second["x_scale"] == "categorical"  # upstream quirk kept (docs/code-interpreter-api.md §6.5)


def test_axis_without_ticks_gives_empty_chart() -> None:
    fig = plt.figure()
    plt.plot([1, 2], [3, 4])
    plt.xticks([])
    assert chart_from_figure(fig) == {}


# ---------------------------------------------------------------- scatter


def test_scatter() -> None:
    """SDK ``test_scatter``: no title, labelled datasets, floats everywhere."""
    rng = np.random.default_rng(0)
    x1, y1 = rng.random(5), rng.random(5)
    fig = plt.figure(figsize=(10, 6))
    plt.scatter(x1, y1, label="Dataset 1")
    plt.scatter(np.arange(10), np.arange(10) * 2, label="Dataset 2")
    plt.xlabel("A")
    plt.ylabel("B")
    chart = chart_from_figure(fig)

    assert list(chart) == POINT_KEYS
    assert chart["type"] == "scatter" and chart["title"] is None
    assert (chart["x_label"], chart["y_label"]) == ("A", "B")
    assert (chart["x_scale"], chart["y_scale"]) == ("linear", "linear")
    first, second = chart["elements"]
    assert first["label"] == "Dataset 1"
    assert first["points"] == [[float(a), float(b)] for a, b in zip(x1, y1, strict=True)]
    assert second["label"] == "Dataset 2"
    assert second["points"] == [[float(i), float(2 * i)] for i in range(10)]
    assert all_floats(chart["x_ticks"]) and all(isinstance(s, str) for s in chart["x_tick_labels"])

    sdk = sdk_chart(chart)
    assert isinstance(sdk, ScatterChart) and sdk.type == ChartType.SCATTER
    assert len(sdk.elements[0].points) == 5 and len(sdk.elements[1].points) == 10
    assert sdk.elements[1].points[3] == (3.0, 6.0)


def test_scatter_unlabelled_with_reference_line_and_dates() -> None:
    """Unlabelled scatters keep ``_childN``, a horizontal guide line is ignored,
    and date offsets stay matplotlib day numbers."""
    fig = plt.figure()
    plt.scatter([datetime.date(2024, 1, 1), datetime.date(2024, 1, 3)], [1, 2])
    plt.axhline(1.5)
    chart = chart_from_figure(fig)
    assert chart["type"] == "scatter"
    assert chart["x_scale"] == "datetime"
    assert chart["elements"] == [{"label": "_child0", "points": [[19723.0, 1.0], [19725.0, 2.0]]}]


# -------------------------------------------------------------------- bar


def test_bar_categorical() -> None:
    """SDK ``test_bar``: exactly the dict upstream emits."""
    fig, ax = plt.subplots(figsize=(10, 6))
    ax.bar(["Author A", "Author B", "Author C", "Author D"], [100, 200, 300, 400], label="Books Sold", color="blue")
    ax.set_xlabel("Authors")
    ax.set_ylabel("Number of Books Sold")
    ax.set_title("Book Sales by Authors")
    chart = chart_from_figure(fig)
    assert chart == {
        "type": "bar",
        "title": "Book Sales by Authors",
        "elements": [
            {"label": f"Author {c}", "group": "Books Sold", "value": v}
            for c, v in zip("ABCD", (100.0, 200.0, 300.0, 400.0), strict=True)
        ],
        "x_label": "Authors",
        "y_label": "Number of Books Sold",
        "x_unit": None,
        "y_unit": None,
    }
    assert list(chart) == PLANAR_KEYS
    assert list(chart["elements"][0]) == ["label", "group", "value"]
    assert all_floats(e["value"] for e in chart["elements"])

    sdk = sdk_chart(chart)
    assert isinstance(sdk, BarChart)
    assert [e.value for e in sdk.elements] == [100.0, 200.0, 300.0, 400.0]
    assert {e.group for e in sdk.elements} == {"Books Sold"}


def test_grouped_bars() -> None:
    """Two containers side by side: one group each, labels from x ticks."""
    fig, ax = plt.subplots()
    x = np.arange(3)
    ax.bar(x - 0.2, [1, 4, 2], 0.4, label="2023")
    ax.bar(x + 0.2, [3, 1, 5], 0.4)
    ax.set_xticks(x, ["Q1", "Q2", "Q3"])
    ax.set_ylabel("Revenue [M$]")
    chart = chart_from_figure(fig)
    assert chart["elements"] == [
        {"label": "Q1", "group": "2023", "value": 1.0},
        {"label": "Q2", "group": "2023", "value": 4.0},
        {"label": "Q3", "group": "2023", "value": 2.0},
        {"label": "Q1", "group": "Group 1", "value": 3.0},
        {"label": "Q2", "group": "Group 1", "value": 1.0},
        {"label": "Q3", "group": "Group 1", "value": 5.0},
    ]
    assert (chart["y_label"], chart["y_unit"]) == ("Revenue [M$]", "M$")
    sdk = sdk_chart(chart)
    assert [(e.group, e.value) for e in sdk.elements][3] == ("Group 1", 3.0)


def test_horizontal_bars_swap_labels() -> None:
    fig = plt.figure()
    plt.barh(["a", "b", "c"], [3, 5, 7])
    plt.xlabel("Value [kg]")
    plt.ylabel("Name")
    chart = chart_from_figure(fig)
    assert chart["elements"] == [
        {"label": n, "group": "Group 0", "value": v} for n, v in (("a", 3.0), ("b", 5.0), ("c", 7.0))
    ]
    assert (chart["x_label"], chart["y_label"]) == ("Name", "Value [kg]")
    assert (chart["x_unit"], chart["y_unit"]) == (None, "kg")


def test_equal_height_bars_read_as_horizontal_quirk() -> None:
    fig = plt.figure()
    plt.bar(["a", "b", "c"], [5, 5, 5])
    chart = chart_from_figure(fig)
    assert [(e["label"], e["value"]) for e in chart["elements"]] == [("0", 0.8), ("1", 0.8), ("2", 0.8)]


def test_histogram_is_bar() -> None:
    fig = plt.figure()
    plt.hist([1, 2, 2, 3, 3, 3], bins=3)
    chart = chart_from_figure(fig)
    assert chart["type"] == "bar"
    assert [e["value"] for e in chart["elements"]] == [1.0, 2.0, 3.0]
    assert [e["group"] for e in chart["elements"]] == ["Group 0"] * 3


# -------------------------------------------------------------------- pie


def test_pie_with_labels() -> None:
    """SDK ``test_pie``: autopct texts are ignored, angles rounded."""
    fig = plt.figure(figsize=(8, 8))
    plt.pie([90, 10], labels=["No", "No, in blue"], colors=["#1f77b4", "#ff7f0e"], autopct="%1.1f%%", startangle=90)
    plt.xlabel("ignored")
    plt.title("Will I wake up early tomorrow?")
    chart = chart_from_figure(fig)
    assert chart == {
        "type": "pie",
        "title": "Will I wake up early tomorrow?",
        "elements": [
            {"label": "No", "angle": 324.0, "radius": 1.0},
            {"label": "No, in blue", "angle": 36.0, "radius": 1.0},
        ],
    }
    sdk = sdk_chart(chart)
    assert isinstance(sdk, PieChart)
    assert [(e.label, e.angle, e.radius) for e in sdk.elements] == [("No", 324.0, 1.0), ("No, in blue", 36.0, 1.0)]


def test_pie_without_labels_and_rounding() -> None:
    fig = plt.figure()
    plt.pie([1, 1, 1], radius=0.5)
    chart = chart_from_figure(fig)
    assert chart["title"] is None
    assert chart["elements"] == [{"label": "", "angle": 120.0, "radius": 0.5}] * 3


# -------------------------------------------------------- box and whisker


BOX_DATA = {"Class A": [85, 90, 78, 92, 88], "Class B": [95, 89, 76, 91, 84, 87], "Class C": [75, 82, 88, 79, 86]}


def test_box_and_whisker() -> None:
    """SDK ``test_box_and_whiskers``: exactly the numbers of the docs/code-interpreter-api.md §6.9 example."""
    fig, ax = plt.subplots(figsize=(10, 6))
    ax.boxplot(list(BOX_DATA.values()), tick_labels=list(BOX_DATA), patch_artist=True)
    ax.set_title("Exam Scores Distribution")
    ax.set_xlabel("Class")
    ax.set_ylabel("Score")
    chart = chart_from_figure(fig)

    assert list(chart) == PLANAR_KEYS
    assert chart["type"] == "box_and_whisker"
    assert chart["title"] == "Exam Scores Distribution"
    assert (chart["x_label"], chart["y_label"], chart["x_unit"], chart["y_unit"]) == ("Class", "Score", None, None)
    elements = chart["elements"]
    assert list(elements[0]) == ["label", "min", "first_quartile", "median", "third_quartile", "max", "outliers"]
    assert [e["label"] for e in elements] == ["Class A", "Class B", "Class C"]
    assert [e["min"] for e in elements] == [78.0, 84.0, 75.0]
    assert [e["first_quartile"] for e in elements] == [85.0, 84.75, 79.0]
    assert [e["median"] for e in elements] == [88.0, 88.0, 82.0]
    assert [e["third_quartile"] for e in elements] == [90.0, 90.5, 86.0]
    assert [e["max"] for e in elements] == [92.0, 95.0, 88.0]
    assert [e["outliers"] for e in elements] == [[], [76.0], []]
    assert all(all_floats(v for k, v in e.items() if k not in ("label", "outliers")) for e in elements)

    sdk = sdk_chart(chart)
    assert isinstance(sdk, BoxAndWhiskerChart)
    assert [(e.label, e.min, e.median, e.max, e.outliers) for e in sdk.elements][1] == (
        "Class B",
        84.0,
        88.0,
        95.0,
        [76.0],
    )


def test_horizontal_box_and_whisker_flips() -> None:
    fig, ax = plt.subplots()
    ax.boxplot([[1, 2, 3, 4, 5, 6, 20], [2, 3, 4, 5, 6]], orientation="horizontal", patch_artist=True)
    ax.set_xlabel("Score (pts)")
    ax.set_ylabel("Class")
    chart = chart_from_figure(fig)
    assert (chart["x_label"], chart["y_label"]) == ("Class", "Score (pts)")
    assert (chart["x_unit"], chart["y_unit"]) == (None, "pts")
    stats = [
        (e["min"], e["first_quartile"], e["median"], e["third_quartile"], e["max"], e["outliers"])
        for e in chart["elements"]
    ]
    assert stats == [(1.0, 2.5, 4.0, 5.5, 6.0, [20.0]), (2.0, 3.0, 4.0, 5.0, 6.0, [])]


def test_line_boxplot_without_patches_is_a_line_chart() -> None:
    """Without ``patch_artist`` the boxes are plain lines, so the type is ``line``."""
    fig, ax = plt.subplots()
    ax.boxplot([[1, 2, 3, 4]])
    assert chart_from_figure(fig)["type"] == "line"


# ------------------------------------------------------------- superchart


def test_superchart_with_suptitle() -> None:
    """SDK ``test_superchart``: two sub-charts of different types."""
    x = np.linspace(0, 10, 100)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    fig.suptitle("Multiple Charts Example")
    left.plot(x, np.sin(x))
    left.set_title("Sine Wave")
    left.grid(True)
    right.scatter([1, 2, 3, 4, 5], [2, 3, 5, 7, 11], color="red")
    right.set_title("Scatter Plot")
    right.set_xlabel("X")
    right.set_ylabel("Y")
    chart = chart_from_figure(fig)

    assert list(chart) == ["type", "title", "elements"]
    assert (chart["type"], chart["title"]) == ("superchart", "Multiple Charts Example")
    line, scatter = chart["elements"]
    assert (line["type"], line["title"], line["x_label"], line["y_label"]) == ("line", "Sine Wave", None, None)
    assert len(line["elements"]) == 1 and len(line["elements"][0]["points"]) == 100
    assert (scatter["type"], scatter["title"], scatter["x_label"], scatter["y_label"]) == (
        "scatter",
        "Scatter Plot",
        "X",
        "Y",
    )
    assert scatter["elements"][0]["points"][-1] == [5.0, 11.0]

    sdk = sdk_chart(chart)
    assert isinstance(sdk, SuperChart) and sdk.title == "Multiple Charts Example"
    assert isinstance(sdk.elements[0], LineChart) and isinstance(sdk.elements[1], ScatterChart)
    assert len(sdk.elements[1].elements[0].points) == 5


def test_superchart_without_suptitle_keeps_empty_axes_and_unknown() -> None:
    fig, axes = plt.subplots(1, 3)
    axes[0].bar(["x", "y"], [1, 2], label="counts")
    axes[1].set_title("empty")
    axes[2].imshow(np.eye(3))
    axes[2].set_title("image")
    chart = chart_from_figure(fig)
    assert chart["title"] == ""
    bar, empty, image = chart["elements"]
    assert bar["type"] == "bar" and [e["value"] for e in bar["elements"]] == [1.0, 2.0]
    assert empty["type"] == "line" and empty["title"] == "empty" and empty["elements"] == []
    assert image == {"type": "unknown", "title": "image", "elements": []}

    sdk = sdk_chart(chart)
    assert sdk.title == "" and [c.type for c in sdk.elements] == [ChartType.BAR, ChartType.LINE, ChartType.UNKNOWN]


# ---------------------------------------------------------------- unknown


def test_unknown_keeps_title() -> None:
    """SDK ``test_unknown``: circles count as data but are not a known chart."""
    fig, ax = plt.subplots()
    ax.add_artist(plt.Circle((0, 0), 1, fill=False))
    ax.add_artist(plt.Circle((0, 0), 0.5, fill=False))
    ax.set_title("Two Concentric Circles")
    chart = chart_from_figure(fig)
    assert chart == {"type": "unknown", "title": "Two Concentric Circles", "elements": []}
    sdk = sdk_chart(chart)
    assert type(sdk) is Chart and sdk.type == ChartType.UNKNOWN and sdk.elements == []


def test_mixed_plot_is_unknown() -> None:
    fig = plt.figure()
    plt.plot([1, 2], [3, 5])
    plt.scatter([1, 2], [3, 4])
    assert chart_from_figure(fig) == {"type": "unknown", "title": None, "elements": []}


# --------------------------------------------------- failures and install


def test_failure_gives_empty_chart_and_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from kernel_bridge.kernel_side.charts import extract

    def broken(figure: Figure) -> dict:
        raise RuntimeError("boom")

    monkeypatch.setattr(extract, "extract", broken)
    fig = plt.figure()
    plt.plot([1, 2])
    with caplog.at_level(logging.DEBUG, logger="kernel_bridge.kernel_side.charts"):
        assert chart_from_figure(fig) == {}
    assert "boom" in caplog.text


def _display_formatter() -> Any:
    """A display formatter as in the kernel: chart formatter installed at start-up,
    then the inline backend activated by the user's first plot (PNG for figures).

    The order matters: activation pops every ``Figure`` printer from every
    formatter, which must not remove the chart.
    """
    from IPython.core.formatters import DisplayFormatter
    from IPython.core.pylabtools import select_figure_formats

    shell = SimpleNamespace(display_formatter=DisplayFormatter())
    charts.install(shell)
    select_figure_formats(shell, {"png"})
    return shell.display_formatter


def test_install_adds_chart_after_png() -> None:
    formatter = _display_formatter()
    fig = plt.figure()
    plt.plot([1, 2], [3, 4])
    data, _ = formatter.format(fig)
    assert list(data) == ["text/plain", "image/png", "e2b/chart"]
    assert data["e2b/chart"]["elements"][0]["points"] == [[1.0, 3.0], [2.0, 4.0]]
    assert data["text/plain"] == "<Figure size 640x480 with 1 Axes>"

    blank, _ = formatter.format(plt.subplots()[0])
    assert blank["e2b/chart"] == {} and "image/png" in blank


def test_install_failure_keeps_png(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernel_bridge.kernel_side.charts import extract

    monkeypatch.setattr(extract, "extract", lambda figure: 1 / 0)
    formatter = _display_formatter()
    fig = plt.figure()
    plt.plot([1, 2])
    data, _ = formatter.format(fig)
    assert data["e2b/chart"] == {}
    assert data["image/png"]


def test_install_honours_repr_e2b_chart_and_ignores_others() -> None:
    formatter = _display_formatter()

    class Custom:
        def _repr_e2b_chart_(self) -> dict:
            return {"type": "pie", "title": "custom", "elements": []}

    assert formatter.format(Custom())[0]["e2b/chart"]["title"] == "custom"
    assert "e2b/chart" not in formatter.format([1, 2])[0]


def test_install_does_not_import_matplotlib() -> None:
    """Kernel start-up must stay cheap: installing never imports matplotlib."""
    code = (
        "import sys\n"
        "from types import SimpleNamespace\n"
        "from IPython.core.formatters import DisplayFormatter\n"
        "from kernel_bridge.kernel_side import charts\n"
        "shell = SimpleNamespace(display_formatter=DisplayFormatter())\n"
        "charts.install(shell)\n"
        "assert 'e2b/chart' in shell.display_formatter.formatters\n"
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'numpy'))))\n"
    )
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
