/* The collective measurements of osu_coll.rs, written against MPI so that
 * Open MPI and MPICH can be measured the same way in the same run.
 *
 *   mpicc -O2 mpi_coll.c -o mpi_coll && mpirun -np 4 ./mpi_coll [--osu] [--only NAME]
 *
 * Prints one "name size value" line per figure (us), for barrier, and for
 * broadcast, reduce and allreduce (sums of doubles) and allgather and
 * alltoall (bytes, the size per rank) from 8 B to 1 MiB: by default the
 * average time of one call over many back-to-back calls, the largest over
 * the ranks; with --osu, as the OSU micro-benchmarks measure, each call
 * timed alone with an untimed barrier after it (none for barrier), the
 * average over the calls and then over the ranks. With --only, just the
 * measure NAME (barrier, broadcast, ...).
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX (1 << 20)

enum op { BARRIER, BCAST, REDUCE, ALLREDUCE, ALLGATHER, ALLTOALL };
static const char *names[] = {"barrier", "broadcast", "reduce", "allreduce", "allgather",
                              "alltoall"};

static int iters(size_t size) { return size <= 4096 ? 5000 : size <= 65536 ? 500 : 200; }

static double *vec, *vec_out;
static char *block, *all, *send_all;

static void call(enum op op, size_t size) {
    int n = (int)(size / 8);
    switch (op) {
    case BARRIER: MPI_Barrier(MPI_COMM_WORLD); break;
    case BCAST: MPI_Bcast(vec, n, MPI_DOUBLE, 0, MPI_COMM_WORLD); break;
    case REDUCE: MPI_Reduce(vec, vec_out, n, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD); break;
    case ALLREDUCE: MPI_Allreduce(MPI_IN_PLACE, vec, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD); break;
    case ALLGATHER:
        MPI_Allgather(block, (int)size, MPI_BYTE, all, (int)size, MPI_BYTE, MPI_COMM_WORLD);
        break;
    case ALLTOALL:
        MPI_Alltoall(send_all, (int)size, MPI_BYTE, all, (int)size, MPI_BYTE, MPI_COMM_WORLD);
        break;
    }
}

static int osu;

static double measure(enum op op, size_t size, int n) {
    for (int i = 0; i < n / 10; i++)
        call(op, size);
    MPI_Barrier(MPI_COMM_WORLD);
    if (osu) {
        double total = 0, sum;
        int p;
        for (int i = 0; i < n; i++) {
            double t = MPI_Wtime();
            call(op, size);
            total += MPI_Wtime() - t;
            if (op != BARRIER)
                MPI_Barrier(MPI_COMM_WORLD);
        }
        total /= n;
        MPI_Allreduce(&total, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        MPI_Comm_size(MPI_COMM_WORLD, &p);
        return sum / p;
    }
    double t = MPI_Wtime();
    for (int i = 0; i < n; i++)
        call(op, size);
    double secs = (MPI_Wtime() - t) / n, worst;
    MPI_Allreduce(&secs, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return worst;
}

int main(int argc, char **argv) {
    int me, p;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--osu") == 0)
            osu = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
    }
    vec = malloc(MAX);
    vec_out = malloc(MAX);
    block = malloc(MAX);
    all = malloc((size_t)p * MAX);
    send_all = malloc((size_t)p * MAX);
    /* Written, as in osu_coll and the OSU benchmarks: memory never written
       reads the kernel's one shared zero page, which is always in cache. */
    for (size_t i = 0; i < MAX / 8; i++)
        vec[i] = 1.0;
    memset(vec_out, 0, MAX);
    memset(block, 1, MAX);
    memset(all, 0, (size_t)p * MAX);
    memset(send_all, 2, (size_t)p * MAX);
    if (!only || strcmp(only, names[BARRIER]) == 0) {
        double b = measure(BARRIER, 0, 20000);
        if (me == 0)
            printf("barrier 0 %.4f\n", b * 1e6);
    }
    for (size_t size = 8; size <= MAX; size *= 2)
        for (int op = BCAST; op <= ALLTOALL; op++) {
            if (only && strcmp(only, names[op]) != 0)
                continue;
            double s = measure(op, size, iters(size));
            if (me == 0)
                printf("%s %zu %.4f\n", names[op], size, s * 1e6);
        }
    MPI_Finalize();
    return 0;
}
