"""A real SMTP server for casewire's delivery tests (aiosmtpd).

Every accepted message is written to --dir as NNNNNN-<recipient>.eml (written
to a temporary name, then renamed, before the 250 reply is sent), so a file's
existence means "the server accepted this message".

--tempfail ADDR:N   answer 451 to the first N RCPT TO:<ADDR>, then 250
--reject ADDR       answer 550 to every RCPT TO:<ADDR>
Prints "READY <port>" on stdout once it accepts connections.
"""

import argparse
import itertools
import os
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, folder, tempfail, reject):
        self.folder = folder
        self.tempfail = dict(tempfail)
        self.reject = set(reject)
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        addr = address.lower()
        if addr in self.reject:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        with self.lock:
            left = self.tempfail.get(addr, 0)
            if left > 0:
                self.tempfail[addr] = left - 1
                return "451 4.7.1 <%s>: greylisted, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        for rcpt in envelope.rcpt_tos:
            name = "%06d-%s.eml" % (n, rcpt.lower())
            tmp = os.path.join(self.folder, "." + name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(("X-Envelope-From: %s\r\n" % envelope.mail_from).encode())
                f.write(envelope.original_content or envelope.content)
            os.rename(tmp, os.path.join(self.folder, name))
        return "250 2.0.0 Ok: queued"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--tempfail", action="append", default=[])
    p.add_argument("--reject", action="append", default=[])
    a = p.parse_args()
    tempfail = []
    for t in a.tempfail:
        addr, n = t.rsplit(":", 1)
        tempfail.append((addr.lower(), int(n)))
    os.makedirs(a.dir, exist_ok=True)
    handler = Recorder(a.dir, tempfail, [r.lower() for r in a.reject])
    controller = Controller(handler, hostname="127.0.0.1", port=a.port, data_size_limit=0)
    controller.start()
    print("READY %d" % a.port, flush=True)
    try:
        # Exit when the parent (the test) goes away and closes our stdin.
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
