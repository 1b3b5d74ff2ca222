#include "sim_queue.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void sim_queue_init(sim_queue *q) {
    memset(q, 0, sizeof(*q));
}

void sim_queue_free(sim_queue *q) {
    free(q->heap);
    memset(q, 0, sizeof(*q));
}

static int ev_less(const sim_event *x, const sim_event *y) {
    if (x->time != y->time)
        return x->time < y->time;
    return x->seq < y->seq;
}

static void ev_swap(sim_event *x, sim_event *y) {
    sim_event t = *x;
    *x = *y;
    *y = t;
}

void sim_queue_push(sim_queue *q, uint64_t time, enum sim_ev_kind kind, uint32_t a, uint64_t b,
                    void *ptr) {
    if (q->count == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 1024;
        assert(cap <= SIM_QUEUE_EVENTS_MAX);
        sim_event *h = realloc(q->heap, cap * sizeof(*h));
        assert(h != NULL);
        q->heap = h;
        q->cap = cap;
    }
    size_t i = q->count++;
    q->heap[i] = (sim_event){time, q->seq_next++, kind, a, b, ptr};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&q->heap[i], &q->heap[p]))
            break;
        ev_swap(&q->heap[i], &q->heap[p]);
        i = p;
    }
}

int sim_queue_pop(sim_queue *q, sim_event *ev) {
    if (q->count == 0)
        return -1;
    *ev = q->heap[0];
    q->heap[0] = q->heap[--q->count];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->count && ev_less(&q->heap[l], &q->heap[m]))
            m = l;
        if (r < q->count && ev_less(&q->heap[r], &q->heap[m]))
            m = r;
        if (m == i)
            break;
        ev_swap(&q->heap[i], &q->heap[m]);
        i = m;
    }
    assert(q->count == 0 || !ev_less(&q->heap[0], ev));
    return 0;
}

uint64_t sim_queue_peek_time(const sim_queue *q) {
    assert(q->count > 0);
    return q->heap[0].time;
}
