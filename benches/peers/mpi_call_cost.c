/* The measurement of call_cost.rs, written against MPI so that Open MPI and
 * MPICH can be measured the same way:
 *
 *   mpicc -O2 mpi_call_cost.c -o mpi_call_cost
 *   mpirun -np 2 ./mpi_call_cost [OP] [BYTES] [CALLS] [ROUNDS] [PAUSE]
 *
 * (default broadcast, 8 bytes, 16 calls, 2000 rounds, 200 us pause; OP is
 * broadcast or reduce, of sums of doubles). In each round the ranks that
 * only send (a broadcast's root, a reduce's other ranks) make CALLS calls
 * back to back; the ranks that receive first sleep PAUSE us, then make
 * theirs; then everyone meets in a barrier. Each rank prints its role and
 * the median over the rounds of its time per call (ns). Each call is made
 * by one_call, which callgrind counts alone
 * (--toggle-collect=one_call, benches/call_instructions.sh).
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int reduce;

__attribute__((noinline)) void one_call(double *v, int n, int rank) {
    if (!reduce)
        MPI_Bcast(v, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    else
        MPI_Reduce(rank ? v : MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const char *op = argc > 1 ? argv[1] : "broadcast";
    if (strcmp(op, "broadcast") != 0 && strcmp(op, "reduce") != 0) {
        fprintf(stderr, "mpi_call_cost: unknown operation %s\n", op);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    reduce = strcmp(op, "reduce") == 0;
    size_t bytes = argc > 2 ? strtoul(argv[2], NULL, 10) : 8;
    int calls = argc > 3 ? atoi(argv[3]) : 16;
    int rounds = argc > 4 ? atoi(argv[4]) : 2000;
    int pause = argc > 5 ? atoi(argv[5]) : 200;
    if (calls < 1 || rounds < 1 || pause < 0) {
        fprintf(stderr, "mpi_call_cost: CALLS and ROUNDS must be positive\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int n = bytes / 8 ? (int)(bytes / 8) : 1;
    double *v = malloc(n * sizeof *v);
    double *times = malloc(rounds * sizeof *times);
    if (!v || !times)
        MPI_Abort(MPI_COMM_WORLD, 1);
    for (int i = 0; i < n; i++)
        v[i] = 1.0;
    int sends = reduce ? rank != 0 : rank == 0;
    for (int r = 0; r < rounds; r++) {
        if (!sends)
            usleep(pause);
        double t = MPI_Wtime();
        for (int i = 0; i < calls; i++)
            one_call(v, n, rank);
        times[r] = (MPI_Wtime() - t) / calls;
        MPI_Barrier(MPI_COMM_WORLD);
    }
    qsort(times, rounds, sizeof *times, by_value);
    printf("PE %d %s: %s of %zu B, %.1f ns per call (median of %d rounds of %d)\n", rank,
           sends ? "sends" : "receives", op, bytes, times[rounds / 2] * 1e9, rounds, calls);
    free(v);
    free(times);
    MPI_Finalize();
    return 0;
}
