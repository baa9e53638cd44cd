#include "status.h"

#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

mf_shared_t *mf_status_map(int n)
{
    size_t size = sizeof(mf_shared_t) + (size_t)n * sizeof(mf_worker_slot_t);
    mf_shared_t *s = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (s == MAP_FAILED)
        return NULL;
    s->generation = 1;
    s->nslots = n;
    return s;
}

double mf_status_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t mf_status_rss_kib(void)
{
    unsigned long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    int n;

    if (!f)
        return 0;
    n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2)
        return 0;
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}
