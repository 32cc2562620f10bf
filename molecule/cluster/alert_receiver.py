"""The scenario's Alertmanager webhook receiver: each notification's JSON body appended as one line to
the file given (tests/test_monitoring.py reads it). alert_receiver.py <port> <file>"""

import http.server
import sys

PORT, LOG = int(sys.argv[1]), sys.argv[2]


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(LOG, "ab") as log:
            log.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.end_headers()


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
