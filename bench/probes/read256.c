/* Read bandwidth of a block of floats held in cache, summed with 256-bit loads. With two
 * threads each thread always reads its own half, as a weight matrix split by columns would be.
 * Build and run: gcc -O3 -mavx2 -pthread read256.c -o read256 && ./read256 6 1 && ./read256 6 2
 * Arguments: megabytes in all (a decimal), threads. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PASSES 400
static float *block;
static size_t floats_per_thread;
static volatile float keep;

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void *sum(void *which) {
    const float *mine = block + (size_t)which * floats_per_thread;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int p = 0; p < PASSES; p++)
        for (size_t i = 0; i + 32 <= floats_per_thread; i += 32) {
            s0 = _mm256_add_ps(s0, _mm256_load_ps(mine + i));
            s1 = _mm256_add_ps(s1, _mm256_load_ps(mine + i + 8));
            s2 = _mm256_add_ps(s2, _mm256_load_ps(mine + i + 16));
            s3 = _mm256_add_ps(s3, _mm256_load_ps(mine + i + 24));
        }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    keep = lanes[0];
    return NULL;
}

int main(int argc, char **argv) {
    double megabytes = argc > 1 ? atof(argv[1]) : 6;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    size_t total = (size_t)(megabytes * 1048576 / 4);
    floats_per_thread = total / threads / 32 * 32;
    block = aligned_alloc(64, total * 4 + 64);
    for (size_t i = 0; i < total; i++) block[i] = 1.0f;
    pthread_t ids[16];
    double start = seconds();
    for (long t = 0; t < threads; t++) pthread_create(&ids[t], NULL, sum, (void *)t);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    double elapsed = seconds() - start;
    double bytes = (double)PASSES * floats_per_thread * threads * 4;
    printf("megabytes=%.2f threads=%d gb_per_s=%.1f us_per_pass=%.1f\n", megabytes, threads,
           bytes / elapsed / 1e9, elapsed / PASSES * 1e6);
    return 0;
}
