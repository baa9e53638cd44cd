/*
 * What the master and its workers share: one slot per worker in an anonymous shared
 * mapping made before the first fork. Workers write their own slot from the loop's tick
 * (the heartbeat that tells the master the loop is not stuck) and the master reads them for
 * supervision and for the status report.
 */
#ifndef MF_STATUS_H
#define MF_STATUS_H

#include <stdint.h>

typedef struct mf_worker_slot {
    volatile int32_t pid;
    volatile int32_t app_version;
    volatile double heartbeat; /* CLOCK_MONOTONIC seconds at the loop's last tick */
    volatile double started;
    volatile uint64_t served;
    volatile uint64_t accepted;
    volatile double last_accept; /* CLOCK_MONOTONIC seconds of the last accept, 0 if none */
    volatile uint32_t in_flight;
    volatile uint32_t conns;
    volatile uint64_t rss_kib;
} mf_worker_slot_t;

typedef struct mf_shared {
    volatile int32_t generation; /* the app version workers load now; bumped per reload */
    int32_t nslots;
    mf_worker_slot_t slots[];
} mf_shared_t;

/* Maps the shared area for n workers; NULL on failure. */
mf_shared_t *mf_status_map(int n);

/* Seconds on the monotonic clock. */
double mf_status_clock(void);

/* This process's resident memory in KiB, from /proc/self/statm; 0 if unknown. */
uint64_t mf_status_rss_kib(void);

#endif
