/* Streaming-read bandwidth: THREADS threads each sum their share of a buffer of
 * MB megabytes (64-bit words, 4 independent accumulators so the adds keep up with
 * memory), best of REPEATS. Plain C, no intrinsics: the compiler's baseline
 * vectorisation for the target (SSE2 on x86-64, NEON on aarch64) is enough to be
 * memory-bound. Prints one line: "stream_read_gb_s <value>".
 *
 *   cc -O2 -pthread -o stream_read stream_read.c && ./stream_read 1024 2 5
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job { const uint64_t *p; size_t n; uint64_t sum; };

static void *reader(void *arg) {
    struct job *j = arg;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= j->n; i += 4) { a += j->p[i]; b += j->p[i + 1]; c += j->p[i + 2]; d += j->p[i + 3]; }
    for (; i < j->n; i++) a += j->p[i];
    j->sum = a + b + c + d;
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    int threads = argc > 2 ? atoi(argv[2]) : 2, repeats = argc > 3 ? atoi(argv[3]) : 5;
    size_t words = mb * 1024 * 1024 / 8;
    uint64_t *buf = malloc(words * 8);
    if (!buf || threads < 1 || threads > 64) return 1;
    memset(buf, 1, words * 8);
    double best = 1e30;
    uint64_t check = 0;
    for (int r = 0; r < repeats; r++) {
        pthread_t tid[64];
        struct job jobs[64];
        double t0 = now();
        for (int t = 0; t < threads; t++) {
            size_t lo = words * t / threads, hi = words * (t + 1) / threads;
            jobs[t] = (struct job){buf + lo, hi - lo, 0};
            pthread_create(&tid[t], NULL, reader, &jobs[t]);
        }
        for (int t = 0; t < threads; t++) { pthread_join(tid[t], NULL); check += jobs[t].sum; }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    printf("stream_read_gb_s %.3f\n", words * 8 / best / 1e9);
    fprintf(stderr, "checksum %llu\n", (unsigned long long)check);
    free(buf);
    return 0;
}
