"""A local SMTP server for the e-mail alert tests.

    smtp_capture.py PORT DIR

Runs aiosmtpd on 127.0.0.1:PORT and writes every message it accepts to DIR as
<n>.json, {"mail_from", "rcpt_tos", "data"}, written whole (renamed into place) so that a
reader never sees half a message. Writes DIR/ready once it listens, then serves until killed.
"""

import itertools
import json
import os
import signal
import sys

from aiosmtpd.controller import Controller


class Capture:
    def __init__(self, out):
        self.out = out
        self.numbers = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        n = next(self.numbers)
        message = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": envelope.content.decode("utf-8", "replace"),
        }
        partial = os.path.join(self.out, f".{n:04}.partial")
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(message, f)
        os.rename(partial, os.path.join(self.out, f"{n:04}.json"))
        return "250 Message accepted"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Capture(out), hostname="127.0.0.1", port=port)
    controller.start()
    with open(os.path.join(out, "ready"), "w", encoding="utf-8"):
        pass
    signal.pause()


if __name__ == "__main__":
    main()
