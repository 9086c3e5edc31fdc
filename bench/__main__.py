"""`python -m bench [--quick]`: one run, one table of ratios against baselines."""

from __future__ import annotations

import argparse
import platform
import time

import psutil
from e2b_code_interpreter import Sandbox

from bench import cases, footprint
from bench.stats import Target, render
from tests.harness import start_daemon

MB = cases.MB


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer samples, no 1 GB transfer")
    args = parser.parse_args()
    samples = 50 if args.quick else 300
    sizes = [1000, MB, 100 * MB] + ([] if args.quick else [1000 * MB])

    rows: list[Target] = [cases.idle_rss()]
    daemon = start_daemon("--log-level", "WARNING")
    try:
        sbx = Sandbox.create(**daemon.sdk_opts())
        sbx.run_code("pass")
        sbx.commands.run("true")
        fds_before, children_before = cases.resource_counts(daemon)
        rows += cases.run_code_rtt(sbx, samples)
        rows.append(cases.run_code_streaming(sbx, 10_000))
        rows += cases.rich_outputs(sbx)
        rows += cases.concurrent_contexts(daemon, 8, 50)
        rows += cases.create_context(sbx, 5 if args.quick else 10)
        rows += cases.commands(sbx, samples // 2)
        rows += cases.output_flood(sbx, daemon)
        rows += cases.run_code_flood(daemon)
        rows += cases.files(sbx, daemon, sizes)
        rows += cases.listing_and_watch(daemon, sbx)
        rows.append(cases.many_watchers(daemon, 1000))
        time.sleep(3)  # let spare kernels settle
        fds_after, children_after = cases.resource_counts(daemon)
        rows.append(
            Target(
                "fds / child processes before -> after",
                f"{fds_before} -> {fds_after} / {children_before} -> {children_after}",
                "-",
                "no growth",
                fds_after <= fds_before and children_after <= children_before,
            )
        )
    finally:
        daemon.stop()
    rows += footprint.cases(samples // 2)  # a fresh daemon: idle memory, JavaScript vs Python
    print(
        f"machine: {platform.machine()}, {psutil.cpu_count()} cpus, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, python {platform.python_version()}"
    )
    print(render(rows))


if __name__ == "__main__":
    main()
