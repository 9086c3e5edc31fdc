"""Exit statuses as Go's `os.ProcessState` words them (docs/envd-api.md §5.6).

The SDKs show `status`/`error` to users and compare `exit_code`, so the
wording follows Go, not libc (`signal.strsignal` is capitalised differently).
"""

from __future__ import annotations

import signal

from envd.proto.process_pb2 import ProcessEvent

#: Go's Linux signal table (`syscall.signals`), lower case as Go prints it.
GO_SIGNAL_NAMES: dict[int, str] = {
    signal.SIGHUP: "hangup",
    signal.SIGINT: "interrupt",
    signal.SIGQUIT: "quit",
    signal.SIGILL: "illegal instruction",
    signal.SIGTRAP: "trace/breakpoint trap",
    signal.SIGABRT: "aborted",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating point exception",
    signal.SIGKILL: "killed",
    signal.SIGUSR1: "user defined signal 1",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGUSR2: "user defined signal 2",
    signal.SIGPIPE: "broken pipe",
    signal.SIGALRM: "alarm clock",
    signal.SIGTERM: "terminated",
    getattr(signal, "SIGSTKFLT", 16): "stack fault",  # Python names it only from 3.11
    signal.SIGCHLD: "child exited",
    signal.SIGCONT: "continued",
    signal.SIGSTOP: "stopped (signal)",
    signal.SIGTSTP: "stopped",
    signal.SIGTTIN: "stopped (tty input)",
    signal.SIGTTOU: "stopped (tty output)",
    signal.SIGURG: "urgent I/O condition",
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
    signal.SIGVTALRM: "virtual timer expired",
    signal.SIGPROF: "profiling timer expired",
    signal.SIGWINCH: "window changed",
    signal.SIGIO: "I/O possible",
    signal.SIGPWR: "power failure",
    signal.SIGSYS: "bad system call",
}


def signal_name(signum: int) -> str:
    """Go's wording for a signal; unknown numbers as Go prints them."""
    return GO_SIGNAL_NAMES.get(signum, f"signal {signum}")


def end_event(returncode: int) -> ProcessEvent:
    """The `end` event for an asyncio return code (negative = killed by that signal)."""
    end = ProcessEvent.EndEvent()
    if returncode >= 0:
        end.exit_code = returncode
        end.exited = True
        end.status = f"exit status {returncode}"
        if returncode != 0:
            end.error = end.status
    else:
        end.exit_code = -1
        end.exited = False
        end.status = f"signal: {signal_name(-returncode)}"
        end.error = end.status
    return ProcessEvent(end=end)
