"""Code that runs inside the Python kernel process, never imported by the daemon.

`startup.py` is executed by the kernel at start (see `ipython_kernel_config.py`);
`charts.py` (owned by the charts work) provides the `e2b/chart` formatter.
"""
