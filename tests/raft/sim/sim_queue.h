/*
 * The event queue: a binary min-heap ordered by (virtual time, insertion
 * number). Ties break by insertion order, so the run is a pure function of
 * the seed. The queue owns no payload: whoever pops an event owns what its
 * ptr points to (a message copy, a disk write token, ...).
 */
#ifndef KV_SIM_QUEUE_H
#define KV_SIM_QUEUE_H

#include <stddef.h>
#include <stdint.h>

enum sim_ev_kind {
    SIM_EV_TICK = 1, /* node ticks; a = node index */
    SIM_EV_DELIVER,  /* network delivers ptr (sim_packet *) */
    SIM_EV_FSYNC,    /* disk of node a finishes the sync numbered b */
    SIM_EV_CLIENT,   /* client a acts (issue, retry or time out) */
    SIM_EV_NEMESIS,  /* the fault injector acts */
};

typedef struct sim_event {
    uint64_t time;
    uint64_t seq;
    enum sim_ev_kind kind;
    uint32_t a;
    uint64_t b;
    void *ptr;
} sim_event;

typedef struct sim_queue {
    sim_event *heap;
    size_t count;
    size_t cap;
    uint64_t seq_next;
} sim_queue;

/* Bound on queued events: a run that needs more is a simulator bug. */
#define SIM_QUEUE_EVENTS_MAX (1u << 22)

void sim_queue_init(sim_queue *q);
/* Frees the heap only; payloads are the caller's (drain with pop first). */
void sim_queue_free(sim_queue *q);
void sim_queue_push(sim_queue *q, uint64_t time, enum sim_ev_kind kind, uint32_t a, uint64_t b,
                    void *ptr);
/* Pops the earliest event into *ev; returns 0, or -1 when empty. */
int sim_queue_pop(sim_queue *q, sim_event *ev);
/* Time of the earliest event; the queue must not be empty. */
uint64_t sim_queue_peek_time(const sim_queue *q);

#endif
