"""Imported first by the download host (host.py): the kernel kills the host when the service's
main thread, which started it, ends - by a stop or a crash, even while the host is still importing
yt-dlp (about a second after start-up), before it reads its connection to the service, whose end
closing it watches from then on.

Being first, it also keeps out of the host what yt-dlp would import and no download uses."""

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

# yt-dlp loads its `requests` handler (requests, urllib3, charset_normalizer: ~90 modules, 3 MB
# in the host) whenever that package is installed, as in the dev tools' venv; the
# host's downloads use yt-dlp's urllib handler only, whose redirects downloader.py checks.
if "requests" not in sys.modules:
    sys.modules["requests"] = None  # type: ignore[assignment]  # None: `import requests` fails
