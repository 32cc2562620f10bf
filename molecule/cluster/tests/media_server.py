"""Media server for the cluster tests, on an API host's loopback: /<name> at full speed,
/slow/<name>?rate=<bytes a second> (default RATE) slowly, so a download lasts long enough to be
interrupted."""

import http.server
import sys
import time
import urllib.parse

RATE = 48 * 1024


class Handler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path):
        self.rate = int(urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("rate", [RATE])[0])
        self.slow = path.startswith("/slow/")
        return super().translate_path(path.removeprefix("/slow"))

    def copyfile(self, source, destination):
        if not self.slow:
            return super().copyfile(source, destination)
        while chunk := source.read(self.rate // 8):
            destination.write(chunk)
            time.sleep(1 / 8)
        return None


if __name__ == "__main__":
    port, directory = int(sys.argv[1]), sys.argv[2]
    handler = lambda *args, **kwargs: Handler(*args, directory=directory, **kwargs)  # noqa: E731
    http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
