"""The video a URL names, as reuse compares it: the site's extractor and its video id, so
`youtu.be/ID` and `youtube.com/watch?v=ID` are one video. URLs no site-specific extractor knows
(the generic extractor's) are compared as normalised URLs.

yt-dlp's URL patterns decide, without a network request; this runs in the download host only
(it has yt-dlp imported, the service's main process never does).
"""

import urllib.parse

import yt_dlp.extractor

_DEFAULT_PORTS = {"http": 80, "https": 443}


def media_key(url: str) -> str:
    for extractor in yt_dlp.extractor.gen_extractor_classes():
        if extractor.ie_key() == "Generic" or not extractor.suitable(url):
            continue
        video_id = extractor.get_temp_id(url)
        if video_id:
            return f"{extractor.ie_key()}:{video_id}"
        break
    return f"url:{_normalised(url)}"


def _normalised(url: str) -> str:
    """Scheme and host in lower case, the default port and the fragment dropped."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port if parts.port not in (None, _DEFAULT_PORTS.get(scheme)) else None
    netloc = host if port is None else f"{host}:{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
