/* worker: one thread that runs a function on buffers handed to it, one
 * buffer at a time, so that producing the next buffer overlaps with
 * consuming this one (flatten: reading layers | writing the output;
 * archive: hashing | writing). The producer owns the buffers: a buffer
 * handed over must stay untouched until the next worker_hand() or
 * worker_wait() returns. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* Consumes buf; a non-zero return stops the worker and is returned by the
 * next worker_hand()/worker_wait()/worker_stop() (positive: -ECANCELED). */
typedef int (*worker_fn)(const void *buf, size_t len, void *userdata);

struct worker {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t changed;
        worker_fn fn;
        void *userdata;
        const void *buf;        /* handed over, being consumed; NULL: idle */
        size_t len;
        bool stop;
        int error;
};

/* Starts the thread. Returns 0 or a negative errno. */
int worker_start(struct worker *w, worker_fn fn, void *userdata);

/* Waits until the previous buffer is consumed, then hands buf over.
 * Returns 0, or the worker's error (buf was not taken then). */
int worker_hand(struct worker *w, const void *buf, size_t len);

/* Waits until the worker is idle. Returns 0 or its error. */
int worker_wait(struct worker *w);

/* Lets the worker finish what it has and ends the thread. Returns 0 or
 * the worker's error. */
int worker_stop(struct worker *w);
