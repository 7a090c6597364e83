#include "images/worker.h"

#include <errno.h>

static void *worker_main(void *arg) {
        struct worker *w = arg;
        pthread_mutex_lock(&w->lock);
        for (;;) {
                while (!w->buf && !w->stop)
                        pthread_cond_wait(&w->changed, &w->lock);
                if (!w->buf)
                        break;
                const void *buf = w->buf;
                size_t len = w->len;
                pthread_mutex_unlock(&w->lock);
                int r = w->fn(buf, len, w->userdata);
                pthread_mutex_lock(&w->lock);
                if (r)
                        w->error = r < 0 ? r : -ECANCELED;
                w->buf = NULL;
                pthread_cond_broadcast(&w->changed);
                if (w->error)
                        break;
        }
        pthread_mutex_unlock(&w->lock);
        return NULL;
}

int worker_start(struct worker *w, worker_fn fn, void *userdata) {
        *w = (struct worker){ .fn = fn, .userdata = userdata };
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->changed, NULL);
        int r = pthread_create(&w->thread, NULL, worker_main, w);
        if (r) {
                pthread_cond_destroy(&w->changed);
                pthread_mutex_destroy(&w->lock);
                return -r;
        }
        return 0;
}

/* Called with the lock held. */
static int wait_idle(struct worker *w) {
        while (w->buf && !w->error)
                pthread_cond_wait(&w->changed, &w->lock);
        return w->error;
}

int worker_hand(struct worker *w, const void *buf, size_t len) {
        pthread_mutex_lock(&w->lock);
        int r = wait_idle(w);
        if (r == 0) {
                w->buf = buf;
                w->len = len;
                pthread_cond_broadcast(&w->changed);
        }
        pthread_mutex_unlock(&w->lock);
        return r;
}

int worker_wait(struct worker *w) {
        pthread_mutex_lock(&w->lock);
        int r = wait_idle(w);
        pthread_mutex_unlock(&w->lock);
        return r;
}

int worker_stop(struct worker *w) {
        pthread_mutex_lock(&w->lock);
        int r = wait_idle(w);
        w->stop = true;
        pthread_cond_broadcast(&w->changed);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
        pthread_cond_destroy(&w->changed);
        pthread_mutex_destroy(&w->lock);
        return r;
}
