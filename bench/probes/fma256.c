/* Peak f32 FMA rate with 256-bit vectors (AVX2 + FMA): each thread runs 10 independent
 * multiply-add chains, enough to cover the FMA latency on two pipes.
 * Build and run: gcc -O3 -mavx2 -mfma -pthread fma256.c -o fma256 && ./fma256 1 && ./fma256 2 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 10
static const long ROUNDS = 150000000;
static volatile float keep;

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void *spin(void *unused) {
    (void)unused;
    __m256 acc[CHAINS];
    const __m256 scale = _mm256_set1_ps(0.9999999f), shift = _mm256_set1_ps(1e-8f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
    for (long r = 0; r < ROUNDS; r++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], scale, shift);
    __m256 total = acc[0];
    for (int c = 1; c < CHAINS; c++) total = _mm256_add_ps(total, acc[c]);
    float lanes[8];
    _mm256_storeu_ps(lanes, total);
    keep = lanes[0] + lanes[7];
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    pthread_t ids[16];
    double start = seconds();
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, spin, NULL);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    double elapsed = seconds() - start;
    double flop = (double)threads * ROUNDS * CHAINS * 8 * 2;
    printf("threads=%d avx2_fma_f32_gflops=%.1f\n", threads, flop / elapsed / 1e9);
    return 0;
}
