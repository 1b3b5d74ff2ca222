/*
 * libkvclient: one client, many threads (client.h, "THREADS").
 *
 * One mutex guards the whole client. A synchronous call queues its request
 * and, when another thread is blocked in poll() on the connection, packs and
 * sends it itself at once (kvc_kick): many requests are in flight on the one
 * connection. Then the calling thread either runs the engine's loop (it is
 * the "runner": one thread at a time), or sleeps on a semaphore of its own
 * until the runner has completed its request or hands the loop over. The
 * runner lets go of the mutex only while it blocks (poll, a connection
 * attempt, a pause before the next one), completes the requests of every
 * thread as their answers come, and, once its own is done, returns and wakes
 * one waiting thread to run the loop after it. A request the runner must
 * look at at once (it could not be sent: no connection, a pause after BUSY,
 * the output full) is signalled on the client's eventfd, which the runner
 * polls beside the socket; in the common case nobody writes it.
 *
 * A waiter's semaphore is posted exactly once per time it is linked in the
 * list, by the thread that unlinks it (completion or hand-over), and the
 * post is that thread's last access to it.
 */
#include "client/client_int.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* The client whose loop this thread runs (callbacks run in it), or NULL. */
static _Thread_local kv_client *kvc__running;

int kvc_share_init(kv_client *c) {
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) != 0)
        return KV_ENOMEM;
    /* recursive: an asynchronous callback, run by the loop with the mutex
     * held, may queue more requests */
    (void)pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int rc = pthread_mutex_init(&c->mu, &a);
    (void)pthread_mutexattr_destroy(&a);
    if (rc != 0)
        return KV_ENOMEM;
    c->mu_ok = true;
    c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return c->wake_fd >= 0 ? 0 : KV_ENOMEM;
}

void kvc_share_free(kv_client *c) {
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    c->wake_fd = -1;
    if (c->mu_ok)
        (void)pthread_mutex_destroy(&c->mu);
    c->mu_ok = false;
}

void kvc_lock(kv_client *c) {
    (void)pthread_mutex_lock(&c->mu);
    c->lock_depth++;
}

void kvc_unlock(kv_client *c) {
    assert(c->lock_depth > 0);
    c->lock_depth--;
    (void)pthread_mutex_unlock(&c->mu);
}

bool kvc_in_callback(const kv_client *c) {
    return kvc__running == c;
}

/* ---- the runner blocks ----------------------------------------------------- */

void kvc_io_release(kv_client *c, bool polling) {
    assert(c->lock_depth == 1 && kvc__running == c);
    c->polling = polling;
    kvc_unlock(c);
}

void kvc_io_reacquire(kv_client *c) {
    kvc_lock(c);
    c->polling = false;
}

void kvc_wake_drain(kv_client *c) {
    uint64_t v;
    ssize_t n;
    do
        n = read(c->wake_fd, &v, sizeof v);
    while (n < 0 && errno == EINTR);
}

static void wake_runner(kv_client *c) {
    uint64_t one = 1;
    ssize_t n;
    do
        n = write(c->wake_fd, &one, sizeof one);
    while (n < 0 && errno == EINTR);
}

/* ---- waiters --------------------------------------------------------------- */

static void waiter_link(kv_client *c, kvc_waiter *w) {
    assert(!w->linked);
    w->linked = true;
    w->prev = c->waiters_tail;
    w->next = NULL;
    if (c->waiters_tail != NULL)
        c->waiters_tail->next = w;
    else
        c->waiters_head = w;
    c->waiters_tail = w;
}

static void waiter_unlink(kv_client *c, kvc_waiter *w) {
    assert(w->linked);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        c->waiters_head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        c->waiters_tail = w->prev;
    w->linked = false;
}

/* Wakes w (it is linked): its request is done, or it is to run the loop. */
static void waiter_post(kv_client *c, kvc_waiter *w) {
    waiter_unlink(c, w);
    (void)sem_post(&w->sem); /* the last access to w */
}

void kvc_share_complete(kv_client *c, kvc_result *res) {
    assert(!res->done && c->calls > 0);
    c->calls--; /* the call is over for the client: its thread only returns */
    /* A waiter that is not linked is awake (or runs the loop): once done is
     * set it may return at any moment, so nothing of res or w is touched
     * after; a linked one sleeps until posted. */
    kvc_waiter *w = res->waiter;
    bool post = w != NULL && w->linked;
    if (post)
        waiter_unlink(c, w);
    __atomic_store_n(&res->done, true, __ATOMIC_RELEASE);
    if (post)
        (void)sem_post(&w->sem);
}

/* Other threads' requests go on the wire now if the runner waits in poll;
 * else (or what could not go) the runner is told. */
static void kick(kv_client *c) {
    if (!c->has_runner)
        return; /* this thread runs the loop itself */
    if (c->polling && c->conn.fd >= 0 && kvc_send_queued(c) == 0 && c->qhead == KVC_NONE &&
        c->conn.wlen == 0)
        return;
    if (c->polling)
        wake_runner(c);
}

/* ---- a synchronous call ------------------------------------------------------ */

int kvc_share_begin(kv_client *c) {
    kvc_lock(c);
    int rc = 0;
    if (kvc_in_callback(c))
        rc = KV_EINVAL; /* a callback must not call back in */
    else if (c->exclusive && !pthread_equal(c->exclusive_tid, pthread_self()))
        rc = KV_EBUSY; /* an operator call has the client */
    else if (c->user_inflight > 0)
        rc = KV_EBUSY; /* asynchronous requests pending: kv_client_poll first */
    else if (c->calls >= c->max_inflight)
        rc = KV_EBUSY;
    if (rc != 0) {
        kvc_unlock(c);
        return rc;
    }
    c->calls++;
    return 0;
}

void kvc_share_abort(kv_client *c) {
    assert(c->calls > 0);
    c->calls--;
    kvc_unlock(c);
}

/* The request of res is queued. Runs the loop or waits until it is done;
 * returns with the mutex released. */
void kvc_share_run(kv_client *c, kvc_result *res) {
    kvc_waiter w = {.linked = false};
    (void)sem_init(&w.sem, 0, 0);
    res->waiter = &w;
    kick(c);
    bool locked = true;
    while (!res->done) {
        if (!c->has_runner) {
            c->has_runner = true;
            kvc__running = c;
            (void)kvc_loop(c, UINT64_MAX, res);
            kvc__running = NULL;
            c->has_runner = false;
            if (c->waiters_head != NULL)
                waiter_post(c, c->waiters_head); /* the next runner */
            assert(res->done);
            break;
        }
        waiter_link(c, &w);
        kvc_unlock(c);
        while (sem_wait(&w.sem) != 0 && errno == EINTR)
            ;
        /* posted: done (res is complete, written before the post), or
         * handed the loop */
        if (__atomic_load_n(&res->done, __ATOMIC_ACQUIRE)) {
            locked = false;
            break;
        }
        kvc_lock(c);
    }
    if (locked)
        kvc_unlock(c);
    (void)sem_destroy(&w.sem);
    res->waiter = NULL;
}

/* ---- operator calls and the asynchronous form ---------------------------------- */

int kvc_exclusive_begin(kv_client *c) {
    if (c == NULL)
        return KV_EINVAL;
    kvc_lock(c);
    int rc = 0;
    if (kvc_in_callback(c))
        rc = KV_EINVAL;
    else if (c->calls > 0 || (c->exclusive && !pthread_equal(c->exclusive_tid, pthread_self())))
        rc = KV_EBUSY;
    else if (c->exclusive)
        c->exclusive_depth++;
    else {
        c->exclusive = true;
        c->exclusive_depth = 1;
        c->exclusive_tid = pthread_self();
    }
    kvc_unlock(c);
    return rc;
}

void kvc_exclusive_end(kv_client *c) {
    kvc_lock(c);
    assert(c->exclusive && c->exclusive_depth > 0);
    if (--c->exclusive_depth == 0)
        c->exclusive = false;
    kvc_unlock(c);
}

/* kv_client_poll: runs the loop on this thread; the mutex is held. */
int kvc_share_poll(kv_client *c, uint64_t until_ns) {
    if (kvc_in_callback(c))
        return KV_EINVAL;
    if (c->calls > 0 || (c->exclusive && !pthread_equal(c->exclusive_tid, pthread_self())))
        return KV_EBUSY; /* other threads' calls are running: one form at a time */
    assert(!c->has_runner);
    c->has_runner = true;
    kvc__running = c;
    int n = kvc_loop(c, until_ns, NULL);
    kvc__running = NULL;
    c->has_runner = false;
    return n;
}
