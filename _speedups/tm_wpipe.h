/* A writer thread behind the copy loop: the caller reads (and hashes) one buffer while the thread
 * writes the previous ones.
 *
 * Why: read + hash + write one after the other adds the three costs; with the writes on a second
 * core, a copy with a fast hash (xxh3) or none costs about one read, where tm_pipe.h's split (the
 * thread reads and writes, the caller only hashes) would put two copies on one core. For a slow
 * hash (sha256) tm_pipe.h is the better split; copy.pxi picks. Buffers form a ring of
 * TM_WPIPE_SLOTS: slot 0 is the caller's buffer, the others are allocated here with the same size
 * and freed by tm_wpipe_finish(). The ring keeps the order, so the file is written in the order it
 * was read. Everything runs without the GIL; a write error stops the thread, and the caller sees
 * it at its next tm_wpipe_acquire().
 */
#ifndef TM_WPIPE_H
#define TM_WPIPE_H

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TM_WPIPE_SLOTS 3

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int dst_fd;
    char *buf[TM_WPIPE_SLOTS];
    size_t len[TM_WPIPE_SLOTS];
    int next_fill;  /* the slot the caller reads into */
    int next_write; /* the slot the thread writes next */
    int queued;     /* slots handed to the thread and not yet written */
    int closing;    /* the caller has handed on its last slot */
    int werr;       /* errno of a failed write (0: none) */
} tm_wpipe;

static int tm_wpipe_write_all(int fd, const char *data, size_t size) {
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        done += (size_t)n;
    }
    return 0;
}

static void *tm_wpipe_writer(void *arg) {
    tm_wpipe *p = (tm_wpipe *)arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int slot, err;
        while (p->queued == 0 && !p->closing)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->queued == 0)
            break;
        slot = p->next_write;
        pthread_mutex_unlock(&p->mu);
        err = tm_wpipe_write_all(p->dst_fd, p->buf[slot], p->len[slot]);
        pthread_mutex_lock(&p->mu);
        if (err) {
            p->werr = err;
            pthread_cond_broadcast(&p->cv);
            break;
        }
        p->next_write = (slot + 1) % TM_WPIPE_SLOTS;
        p->queued--;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Start the thread; first (size bytes, the caller's buffer) becomes slot 0. 0, or an errno. */
static int tm_wpipe_start(tm_wpipe *p, int dst_fd, char *first, size_t size) {
    int i, err;
    memset(p, 0, sizeof(*p));
    p->dst_fd = dst_fd;
    p->buf[0] = first;
    for (i = 1; i < TM_WPIPE_SLOTS; i++) {
        p->buf[i] = (char *)malloc(size);
        if (p->buf[i] == NULL) {
            while (--i > 0)
                free(p->buf[i]);
            return ENOMEM;
        }
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    err = pthread_create(&p->thread, NULL, tm_wpipe_writer, p);
    if (err) {
        for (i = 1; i < TM_WPIPE_SLOTS; i++)
            free(p->buf[i]);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
    return err;
}

/* Hand the current slot (its first size bytes) to the writer. */
static void tm_wpipe_submit(tm_wpipe *p, size_t size) {
    pthread_mutex_lock(&p->mu);
    p->len[p->next_fill] = size;
    p->next_fill = (p->next_fill + 1) % TM_WPIPE_SLOTS;
    p->queued++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* The next slot to read into, once the writer has freed it; NULL when the writer has failed. */
static char *tm_wpipe_acquire(tm_wpipe *p) {
    char *slot;
    pthread_mutex_lock(&p->mu);
    while (p->queued == TM_WPIPE_SLOTS && !p->werr)
        pthread_cond_wait(&p->cv, &p->mu);
    slot = p->werr ? NULL : p->buf[p->next_fill];
    pthread_mutex_unlock(&p->mu);
    return slot;
}

/* Let the writer finish what was handed on, join it, free the slots; 0 or the write's errno. */
static int tm_wpipe_finish(tm_wpipe *p) {
    int i, err;
    pthread_mutex_lock(&p->mu);
    p->closing = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    err = p->werr;
    for (i = 1; i < TM_WPIPE_SLOTS; i++)
        free(p->buf[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    return err;
}

#endif
