"""Preloaded first into the fork server (manager.py): the kernel kills the fork server when the
service's main thread, which started it, ends — by a stop or a crash, even while the fork server is
still importing yt-dlp (about a second after start-up; multiprocessing's own exit on EOF waits
until those imports are done, and still covers a crash in the milliseconds before this line runs).
Workers forked later do not inherit this; they watch their pipe to the service instead."""

import ctypes
import signal

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
