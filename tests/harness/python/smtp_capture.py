"""A local SMTP server for the e-mail alert tests.

    smtp_capture.py PORT DIR [--tls starttls|implicit --cert PEM --key PEM] [--login USER:PASSWORD]

Runs aiosmtpd on 127.0.0.1:PORT and writes every message it accepts to DIR as
<n>.json, {"mail_from", "rcpt_tos", "data", "tls", "login"}, written whole (renamed into
place) so that a reader never sees half a message. Writes DIR/ready once it listens, then
serves until killed.

With --tls starttls the server offers STARTTLS and refuses everything but EHLO, STARTTLS and
QUIT before it; with --tls implicit it speaks TLS from the first byte. With --login it
accepts mail only from a client that logged in with that user name and password (AUTH PLAIN
or LOGIN), which it accepts only over TLS.
"""

import argparse
import itertools
import json
import logging
import os
import signal
import ssl
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Capture:
    def __init__(self, out):
        self.out = out
        self.numbers = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        n = next(self.numbers)
        login = None
        if session.authenticated and session.auth_data is not None:
            login = session.auth_data.login.decode("utf-8", "replace")
        message = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": login,
        }
        partial = os.path.join(self.out, f".{n:04}.partial")
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(message, f)
        os.rename(partial, os.path.join(self.out, f"{n:04}.json"))
        return "250 Message accepted"


class Login:
    """Accepts exactly one user name and password."""

    def __init__(self, user, password):
        self.user = user.encode("utf-8")
        self.password = password.encode("utf-8")

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == self.user and auth_data.password == self.password
        return AuthResult(success=ok, auth_data=auth_data if ok else None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("out")
    parser.add_argument("--tls", choices=["starttls", "implicit"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--login")
    args = parser.parse_args()

    # aiosmtpd warns about settings the tests choose on purpose (a login over implicit TLS,
    # which it does not count as TLS); the tests read what the server accepted instead.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    options = {}
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.tls == "starttls":
            options.update(tls_context=context, require_starttls=True)
        else:
            options.update(ssl_context=context)
    if args.login:
        user, password = args.login.split(":", 1)
        options.update(authenticator=Login(user, password), auth_required=True)
        # aiosmtpd counts only STARTTLS as TLS for AUTH; with implicit TLS the whole
        # connection already is.
        if args.tls == "implicit":
            options.update(auth_require_tls=False)

    controller = Controller(
        Capture(args.out), hostname="127.0.0.1", port=args.port, **options
    )
    controller.start()
    with open(os.path.join(args.out, "ready"), "w", encoding="utf-8"):
        pass
    signal.pause()


if __name__ == "__main__":
    main()
