/* Adoption: a new writer takes over the segments of the writers that are gone (their
 * lock can be taken), copies their pending events into its own log in an order that
 * keeps each gone writer's, and removes their files once the copies are synced. The
 * writer (spool.c) hands in how to append and sync; nothing here knows its state. */
#ifndef DN_SPOOL_ADOPT_H
#define DN_SPOOL_ADOPT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct dn_spool_adopter {
    int dir_fd;
    const char *dir;        /* for messages */
    const char *own_writer; /* never adopted */
    /* Gives an intact EVENT record (in a buffer it may rewrite) the writer's next order
     * and appends it; false when it could not. */
    bool (*append)(void *ud, uint8_t *record, uint64_t size);
    /* Makes what append wrote durable; false when it could not. */
    bool (*sync)(void *ud);
    void *ud;
    char error[256]; /* the last failure, empty when none */
} dn_spool_adopter;

/* Adopts every gone writer of the folder that can be claimed. A writer copied in full
 * before a failure is done with; what could not be copied stays on disk for the next
 * opener. */
void dn_spool_adopt(dn_spool_adopter *adopter);

#endif
