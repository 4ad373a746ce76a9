"""A CPython rank that blocks in a function chosen by BRASIL_RANK (the test subject of pstack)."""
import os
import time


def wait_here():
    while True:
        time.sleep(3600)


def spin_here():
    n = 0
    while True:
        n += 1


def middle(rank):
    if rank == 3:
        spin_here()
    wait_here()


middle(int(os.environ.get("BRASIL_RANK", "0")))
