/* OpenSHMEM latency and bandwidth, measured the same way as Weft's osu_rma:
 * PE 0 targets PE 1. Prints "name size value" lines (ns for latency, MB/s
 * for bandwidth). Build: oshcc -O2 shmem_rma.c; run: oshrun -np 2 ./a.out */
#include <shmem.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(void) {
    shmem_init();
    const size_t max = 4u << 20;
    char *buf = shmem_malloc(max);
    long *word = shmem_malloc(64);
    /* Page-aligned, as osu_rma's local buffer is. */
    static char local[4u << 20] __attribute__((aligned(4096)));
    memset(local, 1, max);
    int me = shmem_my_pe();
    shmem_barrier_all();
    if (me == 0) {
        const int iters = 200000;
        uint64_t v = 1, out;
        double t;
        for (int i = 0; i < 1000; i++) { shmem_putmem(buf, &v, 8, 1); shmem_quiet(); }
        t = now();
        for (int i = 0; i < iters; i++) { shmem_putmem(buf, &v, 8, 1); shmem_quiet(); }
        printf("put_latency 8 %.2f\n", (now() - t) / iters);
        t = now();
        for (int i = 0; i < iters; i++) shmem_getmem(&out, buf, 8, 1);
        printf("get_latency 8 %.2f\n", (now() - t) / iters);
        t = now();
        for (int i = 0; i < iters; i++) out = (uint64_t)shmem_long_atomic_fetch_add(word, 1, 1);
        printf("fetch_add_latency 8 %.2f\n", (now() - t) / iters);
        for (size_t size = 8; size <= max; size *= 2) {
            int reps = size >= (1u << 20) ? 200 : 2000;
            /* One untimed round of each first, as osu_rma does. */
            shmem_putmem(buf, local, size, 1);
            shmem_quiet();
            t = now();
            for (int i = 0; i < reps; i++) shmem_putmem(buf, local, size, 1);
            shmem_quiet();
            printf("put_bandwidth %zu %.1f\n", size, size * (double)reps / (now() - t) * 1e3);
            shmem_getmem(local, buf, size, 1);
            t = now();
            for (int i = 0; i < reps; i++) shmem_getmem(local, buf, size, 1);
            printf("get_bandwidth %zu %.1f\n", size, size * (double)reps / (now() - t) * 1e3);
        }
        fflush(stdout);
    }
    shmem_barrier_all();
    shmem_finalize();
    return 0;
}
