"""A real SMTP server for casewire's delivery tests (aiosmtpd).

Every accepted message is written to --dir as NNNNNN-<recipient>.eml (written
to a temporary name, then renamed, before the 250 reply is sent), so a file's
existence means "the server accepted this message".

--tempfail ADDR:N       answer 451 to the first N RCPT TO:<ADDR>, then 250
--reject ADDR           answer 550 5.1.1 to every RCPT TO:<ADDR>
Misbehaviour on command (all of it stops while the file <dir>/.healed exists,
so a test can switch a fault off and on at run time):
--greeting-reply REPLY  greet with REPLY (e.g. "554 5.7.1 go away") and hang up
--silent                accept connections and never say anything
--auth USER:PASS        offer AUTH (without TLS); other credentials get 535 5.7.8
--mail-reply REPLY      answer REPLY to every MAIL FROM
--rcpt-reply ADDR:REPLY answer REPLY to every RCPT TO:<ADDR>
--data-reply REPLY      answer REPLY after the message content
--421-after N           after N accepted messages, answer 421 to MAIL FROM
--drop-after-data       read the message content, then drop the connection
                        without a reply (and without keeping the message)
--auth-log FILE         append a line to FILE for every AUTH command received
                        (whatever follows), so a test sees whether a login
                        was attempted at all
--no-pipelining         do not offer PIPELINING (RFC 2920) in the EHLO reply
                        (offered by default; commands are read in order either way)
--command-log FILE      append a line to FILE for every MAIL command:
                        "MAIL pipelined" when the client had already sent the
                        transaction's next command (it was waiting in the
                        server's input), else "MAIL waited"
Prints "READY <port>" on stdout once it accepts connections.
"""

import argparse
import asyncio
import itertools
import os
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, syntax


class Recorder:
    def __init__(self, folder, a, tempfail):
        self.folder = folder
        self.tempfail = dict(tempfail)
        self.reject = set(r.lower() for r in a.reject)
        self.greeting_reply = a.greeting_reply
        self.silent = a.silent
        self.auth = a.auth
        self.mail_reply = a.mail_reply
        self.rcpt_reply = {}
        for r in a.rcpt_reply:
            addr, reply = r.split(":", 1)
            self.rcpt_reply[addr.lower()] = reply
        self.data_reply = a.data_reply
        self.fail_after = a.fail_after
        self.drop_after_data = a.drop_after_data
        self.auth_log = a.auth_log
        self.pipelining = not a.no_pipelining
        self.command_log = a.command_log
        self.counter = itertools.count(1)
        self.accepted = 0
        self.lock = threading.Lock()

    def healed(self):
        return os.path.exists(os.path.join(self.folder, ".healed"))

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if self.healed():
            return AuthResult(success=True)
        user, password = self.auth.split(":", 1)
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            # Every line but the last is "250-..."; PIPELINING goes before it.
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.command_log:
            # What the client sent after MAIL, still unread: with pipelining,
            # the RCPT that follows is already here.
            waiting = bytes(server._reader._buffer)
            how = "pipelined" if waiting.upper().startswith(b"RCPT") else "waited"
            with open(self.command_log, "a") as f:
                f.write("MAIL %s\n" % how)
        if not self.healed():
            if self.mail_reply:
                return self.mail_reply
            if self.fail_after is not None and self.accepted >= self.fail_after:
                return "421 4.7.0 Too many messages on this connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        addr = address.lower()
        if addr in self.reject:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if addr in self.rcpt_reply and not self.healed():
            return self.rcpt_reply[addr]
        with self.lock:
            left = self.tempfail.get(addr, 0)
            if left > 0:
                self.tempfail[addr] = left - 1
                return "451 4.7.1 <%s>: greylisted, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if not self.healed():
            if self.drop_after_data:
                server.transport.abort()
                return "250 2.0.0 never sent: the connection is gone"
            if self.data_reply:
                return self.data_reply
        n = next(self.counter)
        for rcpt in envelope.rcpt_tos:
            name = "%06d-%s.eml" % (n, rcpt.lower())
            tmp = os.path.join(self.folder, "." + name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(("X-Envelope-From: %s\r\n" % envelope.mail_from).encode())
                f.write(envelope.original_content or envelope.content)
            os.rename(tmp, os.path.join(self.folder, name))
        with self.lock:
            self.accepted += 1
        return "250 2.0.0 Ok: queued"


class MisbehavingSMTP(SMTP):
    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg):
        log = self.event_handler.auth_log
        if log:
            with open(log, "a") as f:
                f.write("AUTH %s\n" % (arg or "").split(" ")[0])
        return await super().smtp_AUTH(arg)

    async def _handle_client(self):
        h = self.event_handler
        if not h.healed():
            if h.silent:
                await asyncio.sleep(3600)
                return
            if h.greeting_reply:
                await self.push(h.greeting_reply)
                self.transport.close()
                return
        await super()._handle_client()


class MisbehavingController(Controller):
    def factory(self):
        return MisbehavingSMTP(self.handler, **self.SMTP_kwargs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--tempfail", action="append", default=[])
    p.add_argument("--reject", action="append", default=[])
    p.add_argument("--greeting-reply")
    p.add_argument("--silent", action="store_true")
    p.add_argument("--auth")
    p.add_argument("--mail-reply")
    p.add_argument("--rcpt-reply", action="append", default=[])
    p.add_argument("--data-reply")
    p.add_argument("--421-after", dest="fail_after", type=int)
    p.add_argument("--drop-after-data", action="store_true")
    p.add_argument("--auth-log")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--command-log")
    a = p.parse_args()
    tempfail = []
    for t in a.tempfail:
        addr, n = t.rsplit(":", 1)
        tempfail.append((addr.lower(), int(n)))
    os.makedirs(a.dir, exist_ok=True)
    handler = Recorder(a.dir, a, tempfail)
    kwargs = {}
    if a.auth:
        kwargs = dict(authenticator=handler.authenticate, auth_require_tls=False)
    controller = MisbehavingController(
        handler, hostname="127.0.0.1", port=a.port, data_size_limit=0, **kwargs
    )
    if a.silent or a.greeting_reply:
        # The controller's own start-up check talks SMTP; a server that
        # greets wrongly or not at all would fail it.
        open(os.path.join(a.dir, ".healed"), "w").close()
        controller.start()
        os.remove(os.path.join(a.dir, ".healed"))
    else:
        controller.start()
    print("READY %d" % a.port, flush=True)
    try:
        # Exit when the parent (the test) goes away and closes our stdin.
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
