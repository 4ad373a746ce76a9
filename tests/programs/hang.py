"""A CPython rank that blocks in a function chosen by BRASIL_RANK (the test subject of pstack).

Rank 3 (or SPIN_RANK) spins in spin_here; every other rank waits in wait_here. With TICK set,
a waiting rank calls tick every 10 ms instead (so a Python breakpoint there is hit soon): its
argument ``x`` is 42, except 7 on rank 5."""
import os
import time


def wait_here():
    while True:
        time.sleep(3600)


def spin_here():
    n = 0
    while True:
        n += 1


def tick(x):
    time.sleep(0.01)
    return x


def middle(rank):
    if rank == int(os.environ.get("SPIN_RANK", "3")):
        spin_here()
    while os.environ.get("TICK"):
        tick(7 if rank == 5 else 42)
    wait_here()


middle(int(os.environ.get("BRASIL_RANK", "0")))
