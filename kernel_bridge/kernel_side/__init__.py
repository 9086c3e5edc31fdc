"""Code that runs inside the Python kernel process, never imported by the daemon.

`startup.py` is executed by the kernel at start (see `ipython_kernel_config.py`);
the `charts` package provides the `e2b/chart` formatter.
"""
