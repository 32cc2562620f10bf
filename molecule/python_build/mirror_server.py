"""A download mirror for the python_build scenario, run inside the test container on loopback.

`--delay` and `--rate` make a mirror that answers, but slowly, so the scenario can show that the
role's probe picks the fast one. Runs on the container's system Python (3.9 on Debian 11).
"""

import argparse
import functools
import http.server
import shutil
import time


class ThrottledHandler(http.server.SimpleHTTPRequestHandler):
    delay = 0.0
    rate = 0  # bytes per second; 0 is unthrottled

    def send_head(self):
        time.sleep(self.delay)
        return super().send_head()

    def copyfile(self, source, outputfile):
        if not self.rate:
            shutil.copyfileobj(source, outputfile)
            return
        chunk = max(self.rate // 10, 1)
        try:
            while block := source.read(chunk):
                outputfile.write(block)
                time.sleep(len(block) / self.rate)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a probe closes the connection after its sample, by design


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="directory served at /")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--rate", type=int, default=0, help="bytes per second, 0 for no limit")
    args = parser.parse_args()
    handler = type("Handler", (ThrottledHandler,), {"delay": args.delay, "rate": args.rate})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), functools.partial(handler, directory=args.root))
    server.serve_forever()


if __name__ == "__main__":
    main()
