"""Python test guest: allocates 1 MiB buffers, writing every byte, and keeps them all.

Expected: as the Rust ``memory-bomb`` guest, the store's memory limit refuses a
``memory.grow`` and the worker classifies the job as over its memory limit: a final
failure.
"""

import jobbox_guest

CHUNK = 1 << 20


def memory_bomb(_data, _ctx):
    chunks = []
    while True:
        chunks.append(b"\xa5" * CHUNK)


Handler = jobbox_guest.export_handler(memory_bomb)
