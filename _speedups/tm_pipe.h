/* A reader-writer thread beside the hashing caller: the thread reads each chunk and writes it, the
 * caller hashes the chunks the thread has read, both without the GIL.
 *
 * Why this split, for slow hashes (EVP: sha256, sha512, md5): the hash is the slowest step, so the
 * caller does nothing else and a copy with sha256 costs what the hash alone costs (less than
 * hashlib's read + hash, when the second core is free). For a fast hash (xxh3) the thread's two
 * copies would be the slowest step: tm_wpipe.h (the thread only writes) is used instead. Writing and hashing a chunk only read its buffer, so they run at the same time;
 * a buffer is read into again only after the caller has hashed it and the thread has written it.
 * Buffers form a ring of TM_PIPE_SLOTS: slot 0 is the caller's buffer (holding the first chunk,
 * already read and hashed by the caller when the pipe starts), the others are allocated here with
 * the same size and freed by tm_pipe_finish(). Chunks are numbered; chunk k lives in slot
 * k % TM_PIPE_SLOTS. A read or write error stops the thread; the caller sees it as the end of
 * the chunks and gets its errno from tm_pipe_finish().
 */
#ifndef TM_PIPE_H
#define TM_PIPE_H

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TM_PIPE_SLOTS 4

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int src_fd;
    int dst_fd;
    size_t size;
    char *buf[TM_PIPE_SLOTS];
    size_t len[TM_PIPE_SLOTS];
    long long nread;   /* chunks read by the thread (chunk 0 by the caller) */
    long long nhashed; /* chunks the caller is done with */
    long long taken;   /* chunks handed to the caller by tm_pipe_next */
    int eof;           /* the thread has read the end of the file and written everything before it */
    int stop;          /* the caller gives up (its own error): the thread stops at its next wait */
    int err;           /* errno of a failed read or write (0: none) */
} tm_pipe;

static int tm_pipe_write_all(int fd, const char *data, size_t size) {
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

static void *tm_pipe_thread(void *arg) {
    tm_pipe *p = (tm_pipe *)arg;
    long long seq = 0;
    for (;;) {
        int slot = (int)(seq % TM_PIPE_SLOTS), err;
        ssize_t n;
        err = tm_pipe_write_all(p->dst_fd, p->buf[slot], p->len[slot]);
        seq++;
        slot = (int)(seq % TM_PIPE_SLOTS);
        pthread_mutex_lock(&p->mu);
        if (err) {
            p->err = err;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        /* the slot of chunk seq held chunk seq - SLOTS: wait until the caller has hashed it */
        while (p->nhashed < seq - TM_PIPE_SLOTS + 1 && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        pthread_mutex_unlock(&p->mu);
        do
            n = read(p->src_fd, p->buf[slot], p->size);
        while (n < 0 && errno == EINTR);
        pthread_mutex_lock(&p->mu);
        if (n < 0)
            p->err = errno ? errno : EIO;
        else if (n == 0)
            p->eof = 1;
        else {
            p->len[slot] = (size_t)n;
            p->nread = seq + 1;
        }
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (n <= 0)
            return NULL;
    }
}

/* Start the thread. first (size bytes, the caller's buffer) holds chunk 0, first_count bytes long,
 * already hashed by the caller; the thread writes it, then reads on. 0, or an errno. */
static int tm_pipe_start(tm_pipe *p, int src_fd, int dst_fd, char *first, size_t size, size_t first_count) {
    int i, err;
    memset(p, 0, sizeof(*p));
    p->src_fd = src_fd;
    p->dst_fd = dst_fd;
    p->size = size;
    p->buf[0] = first;
    p->len[0] = first_count;
    p->nread = 1;
    p->nhashed = 1;
    p->taken = 1;
    for (i = 1; i < TM_PIPE_SLOTS; i++) {
        p->buf[i] = (char *)malloc(size);
        if (p->buf[i] == NULL) {
            while (--i > 0)
                free(p->buf[i]);
            return ENOMEM;
        }
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    err = pthread_create(&p->thread, NULL, tm_pipe_thread, p);
    if (err) {
        for (i = 1; i < TM_PIPE_SLOTS; i++)
            free(p->buf[i]);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
    return err;
}

/* The next chunk to hash: its length, with *data pointing at it; 0 at the end of the file (every
 * chunk written) or when the thread failed (tm_pipe_finish says which). Call tm_pipe_hashed after. */
static size_t tm_pipe_next(tm_pipe *p, char **data) {
    size_t count = 0;
    pthread_mutex_lock(&p->mu);
    while (p->nread <= p->taken && !p->eof && !p->err)
        pthread_cond_wait(&p->cv, &p->mu);
    if (p->nread > p->taken && !p->err) {
        int slot = (int)(p->taken % TM_PIPE_SLOTS);
        *data = p->buf[slot];
        count = p->len[slot];
        p->taken++;
    }
    pthread_mutex_unlock(&p->mu);
    return count;
}

/* The caller is done with the chunk tm_pipe_next gave: its slot may be read into again. */
static void tm_pipe_hashed(tm_pipe *p) {
    pthread_mutex_lock(&p->mu);
    p->nhashed = p->taken;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Stop the thread if stop (the caller failed), join it, free the slots; 0 or the read/write errno. */
static int tm_pipe_finish(tm_pipe *p, int stop) {
    int i, err;
    pthread_mutex_lock(&p->mu);
    if (stop)
        p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    err = p->err;
    for (i = 1; i < TM_PIPE_SLOTS; i++)
        free(p->buf[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    return err;
}

#endif
