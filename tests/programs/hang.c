/* A rank that blocks in a function chosen by BRASIL_RANK: the test subject of pstack.
 * Rank 3 (or SPIN_RANK) spins in spin_here. Every other rank waits in wait_here, entered again
 * every 10 ms (so a breakpoint there is hit soon); with PROGRESS set, it moves instead: it
 * descends 0, 1, … 39 levels in turn, 5 ms at the bottom each time, so two samples taken at
 * any times see it in the same place only once in 40. `value` is 42, except 7 on rank 5. */
#include <stdlib.h>
#include <unistd.h>

volatile int value = 42;
volatile long spins = 0;

void wait_here(void) { usleep(10000); }
void spin_here(void) { for (;;) spins++; }
void descend(int k) { if (k == 0) usleep(5000); else descend(k - 1); }
int spin_rank(void) { const char *s = getenv("SPIN_RANK"); return s ? atoi(s) : 3; }

void middle(int rank) {
    if (rank == spin_rank()) spin_here();
    if (getenv("PROGRESS")) for (int k = 0;; k = (k + 1) % 40) descend(k);
    for (;;) wait_here();
}

int main(void) {
    const char *r = getenv("BRASIL_RANK");
    int rank = r ? atoi(r) : 0;
    if (rank == 5) value = 7;
    middle(rank);
    return 0;
}
