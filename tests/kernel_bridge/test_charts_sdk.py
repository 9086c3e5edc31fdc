"""End-to-end chart tests through the official SDK (docs/code-interpreter-api.md §6, §3.4).

A real daemon runs a real Python kernel; ``sandbox.run_code`` returns the
figure's ``display_data`` as a ``Result`` whose ``chart`` the SDK built from
our ``e2b/chart`` bundle entry. One figure per chart type, mirroring the
upstream SDK chart tests, plus the blank figure whose wire value is ``{}``.
"""

from __future__ import annotations

import datetime
import json
import textwrap
import urllib.request
from typing import Any

from e2b_code_interpreter import Sandbox
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
    ScatterChart,
    SuperChart,
)


def chart_of(sandbox: Sandbox, code: str) -> Any:
    """Run a plotting cell; exactly one figure result carrying PNG and chart."""
    execution = sandbox.run_code(code)
    assert execution.error is None, execution.error
    assert len(execution.results) == 1, execution.results
    result = execution.results[0]
    assert result.png and not result.extra
    assert result.chart is not None
    return result.chart


def test_line_datetime(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import datetime
        import matplotlib.pyplot as plt
        import numpy as np

        x = [datetime.date(2023, 9, 1) + datetime.timedelta(days=i) for i in range(100)]
        t = np.linspace(0, 2 * np.pi, 100)
        plt.figure(figsize=(10, 6))
        plt.plot(x, np.sin(t), label='sin(x)')
        plt.plot(x, np.cos(t), label='cos(x)')
        plt.xlabel('Time (s)')
        plt.ylabel('Amplitude (Hz)')
        plt.title('Plot of sin(x) and cos(x)')
        plt.show()
    """,
    )
    assert isinstance(chart, LineChart)
    assert chart.title == "Plot of sin(x) and cos(x)"
    assert (chart.x_label, chart.y_label, chart.x_unit, chart.y_unit) == ("Time (s)", "Amplitude (Hz)", "s", "Hz")
    assert (chart.x_scale, chart.y_scale) == (ScaleType.DATETIME, ScaleType.LINEAR)
    assert all(isinstance(datetime.datetime.fromisoformat(t), datetime.datetime) for t in chart.x_ticks)
    assert all(type(t) is float for t in chart.y_ticks)
    assert all(isinstance(label, str) for label in chart.x_tick_labels + chart.y_tick_labels)
    assert [e.label for e in chart.elements] == ["sin(x)", "cos(x)"]
    assert [len(e.points) for e in chart.elements] == [100, 100]
    assert chart.elements[0].points[0] == ("2023-09-01", 0.0)
    assert chart.elements[1].points[0] == ("2023-09-01", 1.0)


def test_log_scale_with_grid(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        import numpy as np

        x = np.linspace(0, 100, 100)
        plt.figure(figsize=(10, 6))
        plt.plot(x, np.exp(x), label='y = e^x')
        plt.yscale('log')
        plt.title('Exponential Growth')
        plt.xlabel('X-axis')
        plt.ylabel('Y-axis (log scale)')
        plt.grid(True)
        plt.show()
    """,
    )
    assert isinstance(chart, LineChart)
    assert (chart.x_unit, chart.y_unit) == (None, "log scale")
    assert (chart.x_scale, chart.y_scale) == (ScaleType.LINEAR, ScaleType.LOG)
    assert all(type(t) is float for t in chart.x_ticks + chart.y_ticks)
    assert len(chart.elements) == 1
    assert chart.elements[0].label == "y = e^x" and len(chart.elements[0].points) == 100
    assert all(type(x) is float and type(y) is float for x, y in chart.elements[0].points)


def test_categorical_scale(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        plt.figure(figsize=(10, 6))
        plt.plot([1, 2, 3, 4, 5], ['A', 'B', 'C', 'D', 'E'])
        plt.show()
    """,
    )
    assert (chart.x_scale, chart.y_scale) == (ScaleType.LINEAR, ScaleType.CATEGORICAL)
    assert chart.y_tick_labels == ["A", "B", "C", "D", "E"]
    assert chart.elements[0].label == "Line 0"
    assert chart.elements[0].points[2] == (3.0, "C")


def test_scatter(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        plt.figure(figsize=(10, 6))
        plt.scatter([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], label='Dataset 1')
        plt.scatter(list(range(10)), [2 * i for i in range(10)], label='Dataset 2')
        plt.xlabel('A')
        plt.ylabel('B')
        plt.show()
    """,
    )
    assert isinstance(chart, ScatterChart)
    assert chart.title is None and (chart.x_label, chart.y_label) == ("A", "B")
    assert (chart.x_scale, chart.y_scale) == (ScaleType.LINEAR, ScaleType.LINEAR)
    assert [e.label for e in chart.elements] == ["Dataset 1", "Dataset 2"]
    assert chart.elements[0].points == [(1.0, 5.0), (2.0, 4.0), (3.0, 3.0), (4.0, 2.0), (5.0, 1.0)]
    assert chart.elements[1].points[9] == (9.0, 18.0)


def test_bar(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        authors = ['Author A', 'Author B', 'Author C', 'Author D']
        sales = [100, 200, 300, 400]
        fig, ax = plt.subplots(figsize=(10, 6))
        ax.bar(authors, sales, label='Books Sold', color='blue')
        ax.set_xlabel('Authors')
        ax.set_ylabel('Number of Books Sold')
        ax.set_title('Book Sales by Authors')
        plt.show()
    """,
    )
    assert isinstance(chart, BarChart)
    assert chart.to_dict() == {
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


def test_grouped_bars(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        import numpy as np
        x = np.arange(3)
        fig, ax = plt.subplots()
        ax.bar(x - 0.2, [1, 4, 2], 0.4, label='2023')
        ax.bar(x + 0.2, [3, 1, 5], 0.4, label='2024')
        ax.set_xticks(x, ['Q1', 'Q2', 'Q3'])
        plt.show()
    """,
    )
    assert [(e.label, e.group, e.value) for e in chart.elements] == [
        ("Q1", "2023", 1.0),
        ("Q2", "2023", 4.0),
        ("Q3", "2023", 2.0),
        ("Q1", "2024", 3.0),
        ("Q2", "2024", 1.0),
        ("Q3", "2024", 5.0),
    ]


def test_pie(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        plt.figure(figsize=(8, 8))
        plt.pie([90, 10], labels=['No', 'No, in blue'], autopct='%1.1f%%', startangle=90)
        plt.title('Will I wake up early tomorrow?')
        plt.show()
    """,
    )
    assert isinstance(chart, PieChart)
    assert chart.title == "Will I wake up early tomorrow?"
    assert [(e.label, e.angle, e.radius) for e in chart.elements] == [("No", 324.0, 1.0), ("No, in blue", 36.0, 1.0)]


def test_box_and_whisker(sandbox: Sandbox) -> None:
    """The SDK test's cell, except ``labels=`` (removed in matplotlib 3.11) -> ``tick_labels=``."""
    execution = sandbox.run_code("""
import matplotlib.pyplot as plt

data = {
    'Class A': [85, 90, 78, 92, 88],
    'Class B': [95, 89, 76, 91, 84, 87],
    'Class C': [75, 82, 88, 79, 86],
}
fig, ax = plt.subplots(figsize=(10, 6))
ax.set_xlabel('Class')
ax.set_ylabel('Score')
ax.set_title('Exam Scores Distribution')
ax.boxplot(data.values(), tick_labels=data.keys(), patch_artist=True)
ax.legend()
plt.show()
""")
    assert execution.error is None, execution.error
    chart = execution.results[0].chart
    assert isinstance(chart, BoxAndWhiskerChart)
    assert chart.title == "Exam Scores Distribution"
    assert (chart.x_label, chart.y_label, chart.x_unit, chart.y_unit) == ("Class", "Score", None, None)
    rows = [(e.label, e.min, e.first_quartile, e.median, e.third_quartile, e.max, e.outliers) for e in chart.elements]
    assert rows == [
        ("Class A", 78.0, 85.0, 88.0, 90.0, 92.0, []),
        ("Class B", 84.0, 84.75, 88.0, 90.5, 95.0, [76.0]),
        ("Class C", 75.0, 79.0, 82.0, 86.0, 88.0, []),
    ]


def test_superchart(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        import numpy as np
        x = np.linspace(0, 10, 100)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
        fig.suptitle('Multiple Charts Example')
        ax1.plot(x, np.sin(x))
        ax1.set_title('Sine Wave')
        ax1.grid(True)
        ax2.scatter([1, 2, 3, 4, 5], [2, 3, 5, 7, 11], color='red')
        ax2.set_title('Scatter Plot')
        ax2.set_xlabel('X')
        ax2.set_ylabel('Y')
        plt.show()
    """,
    )
    assert isinstance(chart, SuperChart)
    assert chart.title == "Multiple Charts Example"
    line, scatter = chart.elements
    assert isinstance(line, LineChart) and isinstance(scatter, ScatterChart)
    assert (line.title, line.x_label, line.y_label) == ("Sine Wave", None, None)
    assert len(line.elements) == 1 and len(line.elements[0].points) == 100
    assert (scatter.title, scatter.x_label, scatter.y_label) == ("Scatter Plot", "X", "Y")
    assert scatter.elements[0].points[-1] == (5.0, 11.0)


def test_superchart_without_suptitle_and_unknown(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        fig, (ax1, ax2) = plt.subplots(1, 2)
        ax1.bar(['x', 'y'], [1, 2])
        ax2.add_artist(plt.Circle((0.5, 0.5), 0.2))
        ax2.set_title('Circle')
        plt.show()
    """,
    )
    assert isinstance(chart, SuperChart) and chart.title == ""
    assert [c.type for c in chart.elements] == [ChartType.BAR, ChartType.UNKNOWN]
    assert chart.elements[1].title == "Circle" and chart.elements[1].elements == []


def test_unknown(sandbox: Sandbox) -> None:
    chart = chart_of(
        sandbox,
        """
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.add_artist(plt.Circle((0, 0), 1, fill=False))
        ax.add_artist(plt.Circle((0, 0), 0.5, fill=False))
        ax.set_title('Two Concentric Circles')
        plt.show()
    """,
    )
    assert chart.type == ChartType.UNKNOWN
    assert chart.to_dict() == {"type": "unknown", "title": "Two Concentric Circles", "elements": []}


def test_to_json_keeps_chart(sandbox: Sandbox) -> None:
    execution = sandbox.run_code(
        textwrap.dedent("""
        import matplotlib.pyplot as plt
        plt.scatter([1, 2], [3, 4])
        plt.show()
    """)
    )
    assert json.loads(execution.to_json())["results"][0]["chart"]["type"] == "scatter"


def _raw_result_lines(daemon: Any, code: str) -> list[dict[str, Any]]:
    """POST /execute by hand: the SDK hides ``"chart": {}`` (it maps it to None)."""
    request = urllib.request.Request(
        f"{daemon.url}/execute",
        data=json.dumps({"code": code}).encode(),
        headers={"Content-Type": "application/json", "E2b-Sandbox-Port": "49999"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        lines = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    return [line for line in lines if line["type"] == "result"]


def test_blank_figure_is_empty_chart_on_the_wire(sandbox: Sandbox, daemon: Any) -> None:
    code = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nplt.show()\n"
    execution = sandbox.run_code(code)
    assert len(execution.results) == 1
    assert execution.results[0].png and execution.results[0].chart is None
    (line,) = _raw_result_lines(daemon, code)
    assert line["chart"] == {}
    assert line["text"] == "<Figure size 640x480 with 1 Axes>"
    assert list(line) == ["type", "text", "png", "chart", "extra", "is_main_result"]
