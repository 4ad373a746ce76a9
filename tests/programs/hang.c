/* A rank that blocks in a function chosen by BRASIL_RANK: the test subject of pstack.
 * Rank 3 spins in spin_here; every other rank waits in wait_here; `value` differs on rank 5. */
#include <stdlib.h>
#include <unistd.h>

volatile int value = 42;
volatile long spins = 0;

void wait_here(void) { for (;;) pause(); }
void spin_here(void) { for (;;) spins++; }
void middle(int rank) { if (rank == 3) spin_here(); else wait_here(); }

int main(void) {
    const char *r = getenv("BRASIL_RANK");
    int rank = r ? atoi(r) : 0;
    if (rank == 5) value = 7;
    middle(rank);
    return 0;
}
