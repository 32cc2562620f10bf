"""Preloaded first into the fork server (manager.py): the kernel kills the fork server when the
service's main thread, which started it, ends — by a stop or a crash, even while the fork server is
still importing yt-dlp (about a second after start-up; multiprocessing's own exit on EOF waits
until those imports are done, and still covers a crash in the milliseconds before this line runs).
Workers forked later do not inherit this; they watch their pipe to the service instead.

Being first, it also keeps out of the fork server what yt-dlp would import and no worker uses."""

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

# yt-dlp loads its `requests` handler (requests, urllib3, charset_normalizer: ~90 modules, 3 MB
# shared by every worker) whenever that package is installed, as in the dev tools' venv; the
# service's workers use yt-dlp's urllib handler only, whose redirects downloader.py checks.
if "requests" not in sys.modules:
    sys.modules["requests"] = None  # type: ignore[assignment]  # None: `import requests` fails
