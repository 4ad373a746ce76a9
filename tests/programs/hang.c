/* A rank that blocks in a function chosen by BRASIL_RANK: the test subject of pstack.
 * Rank 3 (or SPIN_RANK) spins in spin_here. Every other rank waits in wait_here, entered again
 * every 10 ms (so a breakpoint there is hit soon); with PROGRESS set, it moves through
 * phase_a, phase_b and phase_c instead, 37 ms in each (so samples taken 0.2 s apart see it
 * somewhere else). `value` is 42, except 7 on rank 5. */
#include <stdlib.h>
#include <unistd.h>

volatile int value = 42;
volatile long spins = 0;

void wait_here(void) { usleep(10000); }
void spin_here(void) { for (;;) spins++; }
void phase_a(void) { usleep(37000); }
void phase_b(void) { usleep(37000); }
void phase_c(void) { usleep(37000); }
int spin_rank(void) { const char *s = getenv("SPIN_RANK"); return s ? atoi(s) : 3; }

void middle(int rank) {
    if (rank == spin_rank()) spin_here();
    if (getenv("PROGRESS")) for (;;) { phase_a(); phase_b(); phase_c(); }
    for (;;) wait_here();
}

int main(void) {
    const char *r = getenv("BRASIL_RANK");
    int rank = r ? atoi(r) : 0;
    if (rank == 5) value = 7;
    middle(rank);
    return 0;
}
