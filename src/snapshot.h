/*
 * The snapshot: the app's files exactly as the last accepted version read them, published by
 * the master in a memfd that every worker inherits. Workers load a reload from it (and a
 * worker that replaces a dead one loads the last good version from it), so what they run is
 * what was checked, never a file saved again meanwhile.
 */
#ifndef MF_SNAPSHOT_H
#define MF_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One file of a version: borrowed pointers, not owned by the snapshot functions. */
typedef struct mf_snapshot_file {
    const char *path;
    size_t path_len;
    const char *src;
    size_t len;
} mf_snapshot_file_t;

/*
 * Encodes files into one buffer (the payload a version is published as). Returns a malloc'd
 * buffer the caller frees, or NULL when out of memory or a file is 4 GiB or larger.
 */
char *mf_snapshot_encode(const mf_snapshot_file_t *files, size_t n, size_t *len);

/* The master's side of the memfd. */
typedef struct mf_snapshot_pub {
    int fd;
    uint64_t gen;              /* of the version published last; 0 before the first */
    off_t end;                 /* where the next version goes */
    off_t cur_off, cur_span;   /* the version published last */
    off_t prev_off, prev_span; /* the one before it: a reader may still be reading it */
} mf_snapshot_pub_t;

/* Creates the memfd; returns 0 or -1 (errno set; p->fd is then -1). */
int mf_snapshot_open(mf_snapshot_pub_t *p);

/*
 * Publishes payload as the next version. Readers see the previous version or this one,
 * whole, never a mix: a version is written where no reader looks, then named in the header
 * in one write, and only the version two before it is freed. Returns 0 or -1.
 */
int mf_snapshot_publish(mf_snapshot_pub_t *p, const char *payload, size_t len);

void mf_snapshot_close(mf_snapshot_pub_t *p);

/*
 * Reads the version published last in fd, whole and verified. Returns a malloc'd payload
 * (its length in *len, its version in *gen when gen is not NULL) or NULL when there is none
 * or it could not be read consistently.
 */
char *mf_snapshot_read(int fd, size_t *len, uint64_t *gen);

/* The memfd a worker reloads from, or -1 (no master: reloads read the disk). */
extern int mf_snapshot_fd;

#endif
