"""video_api_differs: whether a task would change what the role's probe (files/probe.py) found."""

import hashlib


def video_api_differs(state, want, content=None):
    """True when the path in want is missing or its owner, group, mode (or, given content, its
    content; or, given link, its target) differ from want."""
    actual = state["paths"].get(want["path"])
    if actual is None:
        return True
    if "link" in want:
        return actual.get("link") != want["link"]
    if any(actual.get(key) != want[key] for key in ("owner", "group", "mode")):
        return True
    return content is not None and actual.get("sha1") != hashlib.sha1(content.encode()).hexdigest()


class FilterModule:
    def filters(self):
        return {"video_api_differs": video_api_differs}
