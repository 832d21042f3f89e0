/* The two-sided measurements of osu_p2p.rs, written against MPI so that
 * Open MPI and MPICH can be measured the same way in the same run.
 *
 *   mpicc -O2 mpi_p2p.c -o mpi_p2p && mpirun -np 2 ./mpi_p2p
 *
 * Prints one "name size value" line per figure: ping-pong latency (half the
 * round trip, us) from 0 B to 4 MiB; uni- and bi-directional bandwidth
 * (MB/s) with a window of 64 messages, each landing in its own part of the
 * receive buffer; the rate of 8-byte messages (messages/s).
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX (4 << 20)
#define WINDOW 64

static int lat_iters(size_t size) {
    return size <= 8192 ? 20000 : size <= 262144 ? 2000 : 200;
}

static int bw_iters(size_t size) {
    return size <= 8192 ? 400 : size <= 262144 ? 60 : 10;
}

static double bandwidth(int me, size_t size, char *out, char *window, int both) {
    int peer = 1 - me, iters = bw_iters(size), warm = iters / 10 > 0 ? iters / 10 : 1;
    MPI_Request reqs[2 * WINDOW];
    MPI_Status stats[2 * WINDOW];
    double t = 0;
    MPI_Barrier(MPI_COMM_WORLD);
    for (int i = 0; i < iters + warm; i++) {
        if (i == warm)
            t = MPI_Wtime();
        int n = 0;
        if (me == 0 || both)
            for (int k = 0; k < WINDOW; k++)
                MPI_Isend(out, (int)size, MPI_BYTE, peer, 2, MPI_COMM_WORLD, &reqs[n++]);
        if (me == 1 || both)
            for (int k = 0; k < WINDOW; k++)
                MPI_Irecv(window + k * size, (int)size, MPI_BYTE, peer, 2, MPI_COMM_WORLD,
                          &reqs[n++]);
        MPI_Waitall(n, reqs, stats);
        if (!both) {
            char ack[4] = {0};
            if (me == 0)
                MPI_Recv(ack, 4, MPI_BYTE, peer, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            else
                MPI_Send(ack, 4, MPI_BYTE, peer, 3, MPI_COMM_WORLD);
        }
    }
    double secs = MPI_Wtime() - t;
    return (double)size * WINDOW * iters * (both ? 2 : 1) / secs / 1e6;
}

int main(int argc, char **argv) {
    int me, n;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (n != 2) {
        if (me == 0)
            fprintf(stderr, "run with exactly 2 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int peer = 1 - me;
    char *out = malloc(MAX), *inb = malloc(MAX), *window = malloc((size_t)WINDOW * MAX);
    memset(out, 7, MAX);
    memset(inb, 0, MAX);
    memset(window, 0, (size_t)WINDOW * MAX);
    for (size_t size = 0; size <= MAX; size = size ? size * 2 : 1) {
        int iters = lat_iters(size), warm = iters / 10;
        double t = 0;
        for (int i = 0; i < iters + warm; i++) {
            if (i == warm)
                t = MPI_Wtime();
            if (me == 0) {
                MPI_Send(out, (int)size, MPI_BYTE, peer, 1, MPI_COMM_WORLD);
                MPI_Recv(inb, (int)size, MPI_BYTE, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(inb, (int)size, MPI_BYTE, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(out, (int)size, MPI_BYTE, peer, 1, MPI_COMM_WORLD);
            }
        }
        double us = (MPI_Wtime() - t) * 1e6 / (2.0 * iters);
        if (me == 0)
            printf("latency %zu %.4f\n", size, us);
    }
    for (size_t size = 1; size <= MAX; size *= 2) {
        double uni = bandwidth(me, size, out, window, 0);
        double bi = bandwidth(me, size, out, window, 1);
        if (me == 0)
            printf("bandwidth %zu %.4f\nbi_bandwidth %zu %.4f\n", size, uni, size, bi);
    }
    double rate = bandwidth(me, 8, out, window, 0) * 1e6 / 8.0;
    if (me == 0)
        printf("message_rate 8 %.4f\n", rate);
    free(out);
    free(inb);
    free(window);
    MPI_Finalize();
    return 0;
}
