/*
 * The memfd holds a header at offset 0 and the versions after it, each at its own offset
 * (page-aligned) and never written again once named:
 *
 *   header:  "MFSNAP01", gen, offset, length          (4 x 8 bytes)
 *   version: "MFSVER01", gen, length, checksum, then the payload
 *
 * The master appends a version, then rewrites the header to name it. A reader reads the
 * header, then the version it names, and takes it only when the version's own gen and length
 * match the header's and its checksum matches its bytes: a header read while it was being
 * rewritten, or a version freed under the reader (the master punches out the version two
 * before the current one), fails these checks, and the reader starts again. Only the master
 * writes, so no lock is needed, and a worker killed while reading leaves nothing behind.
 *
 * The payload lists the files: "MFS1", then per file a 4-byte path length, the path, a
 * 4-byte source length and the source.
 */
#include "snapshot.h"
#include "ffi.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEAD_SIZE 32
#define VER_SIZE  32
#define PAGE      4096
#define MAX_TRIES 16
/* More than any app's sources; bounds what a reader allocates from a header it read. */
#define MAX_PAYLOAD ((uint64_t)1 << 31)

static const char head_magic[8] = {'M', 'F', 'S', 'N', 'A', 'P', '0', '1'};
static const char ver_magic[8] = {'M', 'F', 'S', 'V', 'E', 'R', '0', '1'};

int mf_snapshot_fd = -1;

/* FNV-1a, 64 bits: enough to tell a whole version from one with pages punched out. */
static uint64_t checksum(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void put64(char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static uint64_t get64(const char *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

char *mf_snapshot_encode(const mf_snapshot_file_t *files, size_t n, size_t *len)
{
    size_t total = 4;
    char *buf, *p;

    for (size_t i = 0; i < n; i++) {
        if (files[i].path_len > UINT32_MAX || files[i].len > UINT32_MAX)
            return NULL;
        total += 8 + files[i].path_len + files[i].len;
    }
    if (!(buf = malloc(total)))
        return NULL;
    memcpy(buf, "MFS1", 4);
    p = buf + 4;
    for (size_t i = 0; i < n; i++) {
        uint32_t plen = (uint32_t)files[i].path_len, slen = (uint32_t)files[i].len;
        memcpy(p, &plen, 4);
        memcpy(p + 4, files[i].path, plen);
        p += 4 + plen;
        memcpy(p, &slen, 4);
        memcpy(p + 4, files[i].src, slen);
        p += 4 + slen;
    }
    *len = total;
    return buf;
}

int mf_snapshot_open(mf_snapshot_pub_t *p)
{
    memset(p, 0, sizeof *p);
    p->end = PAGE;
    p->fd = memfd_create("moonfcgi-app", MFD_CLOEXEC);
    return p->fd < 0 ? -1 : 0;
}

void mf_snapshot_close(mf_snapshot_pub_t *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

static int write_all(int fd, const char *buf, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int mf_snapshot_publish(mf_snapshot_pub_t *p, const char *payload, size_t len)
{
    char head[HEAD_SIZE], ver[VER_SIZE];
    uint64_t gen = p->gen + 1;
    off_t off = p->end, span;

    if (p->fd < 0 || (uint64_t)len > MAX_PAYLOAD)
        return -1;
    span = (off_t)((VER_SIZE + len + PAGE - 1) / PAGE * PAGE);
    memcpy(ver, ver_magic, 8);
    put64(ver + 8, gen);
    put64(ver + 16, len);
    put64(ver + 24, checksum(payload, len));
    if (write_all(p->fd, ver, VER_SIZE, off) < 0 ||
        write_all(p->fd, payload, len, off + VER_SIZE) < 0)
        return -1;
    /* Only now is the version named: a reader never finds a half-written one. */
    memcpy(head, head_magic, 8);
    put64(head + 8, gen);
    put64(head + 16, (uint64_t)off);
    put64(head + 24, len);
    if (write_all(p->fd, head, HEAD_SIZE, 0) < 0)
        return -1;
    /* A reader that read the previous header may still be reading the previous version;
     * the one before that is named nowhere now: give its memory back. */
    if (p->prev_span > 0 &&
        fallocate(p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, p->prev_off, p->prev_span) < 0)
        mf_log_debug("snapshot: cannot free version %llu: %s", (unsigned long long)(gen - 2),
                     strerror(errno));
    p->prev_off = p->cur_off;
    p->prev_span = p->cur_span;
    p->cur_off = off;
    p->cur_span = span;
    p->end = off + span;
    p->gen = gen;
    return 0;
}

static int read_all(int fd, char *buf, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* One attempt: 0 with the payload, 1 when it should be tried again, -1 when there is none. */
static int read_once(int fd, char **out, size_t *len, uint64_t *gen)
{
    char head[HEAD_SIZE], ver[VER_SIZE], *buf;
    uint64_t hgen, hoff, hlen;

    if (read_all(fd, head, HEAD_SIZE, 0) < 0)
        return -1; /* nothing published yet */
    if (memcmp(head, head_magic, 8) != 0)
        return 1;
    hgen = get64(head + 8);
    hoff = get64(head + 16);
    hlen = get64(head + 24);
    if (hoff < PAGE || hoff > (uint64_t)INT64_MAX / 2 || hlen > MAX_PAYLOAD)
        return 1;
    if (read_all(fd, ver, VER_SIZE, (off_t)hoff) < 0)
        return 1;
    if (memcmp(ver, ver_magic, 8) != 0 || get64(ver + 8) != hgen || get64(ver + 16) != hlen)
        return 1;
    if (!(buf = malloc(hlen ? hlen : 1)))
        return -1;
    if (read_all(fd, buf, hlen, (off_t)(hoff + VER_SIZE)) < 0 ||
        checksum(buf, hlen) != get64(ver + 24)) {
        free(buf);
        return 1;
    }
    *out = buf;
    *len = hlen;
    if (gen)
        *gen = hgen;
    return 0;
}

char *mf_snapshot_read(int fd, size_t *len, uint64_t *gen)
{
    char *buf = NULL;

    if (fd < 0)
        return NULL;
    for (int i = 0; i < MAX_TRIES; i++) {
        int rc = read_once(fd, &buf, len, gen);
        if (rc == 0)
            return buf;
        if (rc < 0)
            return NULL;
    }
    return NULL;
}

/* The worker's side: the files of the version read last, looked up by the Lua loader. */

typedef struct file {
    char *path;
    char *src;
    size_t len;
} file_t;

static file_t *files;
static size_t nfiles;

static void files_free(file_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(f[i].path);
        free(f[i].src);
    }
    free(f);
}

/* Splits a payload into files; returns 0 or -1 (malformed or out of memory). */
static int decode(const char *buf, size_t size, file_t **out, size_t *nout)
{
    file_t *f = NULL;
    size_t n = 0, off = 4;

    if (size < 4 || memcmp(buf, "MFS1", 4) != 0)
        return -1;
    while (off < size) {
        uint32_t plen, slen;
        file_t *g;
        if (size - off < 4)
            goto fail;
        memcpy(&plen, buf + off, 4);
        if (plen > size - off - 4 || size - off - 4 - plen < 4)
            goto fail;
        memcpy(&slen, buf + off + 4 + plen, 4);
        if (slen > size - off - 8 - plen)
            goto fail;
        if (!(g = realloc(f, (n + 1) * sizeof *f)))
            goto fail;
        f = g;
        f[n].path = strndup(buf + off + 4, plen);
        f[n].src = malloc(slen ? slen : 1);
        f[n].len = slen;
        n++;
        if (!f[n - 1].path || !f[n - 1].src)
            goto fail;
        memcpy(f[n - 1].src, buf + off + 8 + plen, slen);
        off += 8 + (size_t)plen + slen;
    }
    *out = f;
    *nout = n;
    return 0;
fail:
    files_free(f, n);
    return -1;
}

int mf_ffi_snapshot_refresh(void)
{
    size_t len;
    char *buf = mf_snapshot_read(mf_snapshot_fd, &len, NULL);
    file_t *f;
    size_t n;
    int rc;

    if (!buf)
        return -1;
    rc = decode(buf, len, &f, &n);
    free(buf);
    if (rc < 0)
        return -1;
    files_free(files, nfiles);
    files = f;
    nfiles = n;
    return 0;
}

const char *mf_ffi_snapshot_file(const char *path, size_t *len)
{
    for (size_t i = 0; i < nfiles; i++) {
        if (strcmp(files[i].path, path) == 0) {
            *len = files[i].len;
            return files[i].src;
        }
    }
    return NULL;
}
