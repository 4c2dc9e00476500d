"""Python test guest: raises ``ValueError("guest-raise: deliberate")``, uncaught.

Expected: as the Rust ``panic`` guest, a trap and a final failure, whose message is
``uncaught exception: ValueError: guest-raise: deliberate``. The helper appends the
same line (and where it was raised) to the job's log at error level; componentize-py
prints the traceback to stderr and aborts.
"""

import jobbox_guest


def fail(_data, _ctx):
    raise ValueError("guest-raise: deliberate")


Handler = jobbox_guest.export_handler(fail)
