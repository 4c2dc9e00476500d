"""Python test guest: loops forever in the interpreter, never calling the host.

Expected: as the Rust ``spin`` guest, the worker stops it when it runs out of fuel
(or, with fuel to spare, at its deadline); a final failure.
"""

import jobbox_guest


def spin(_data, _ctx):
    counter = 0
    while True:
        counter += 1


Handler = jobbox_guest.export_handler(spin)
