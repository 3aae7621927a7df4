/* ring.h - partitions and their owners: stable hashing plus rendezvous assignment */
#ifndef FERRULE_RING_H
#define FERRULE_RING_H
#include <stddef.h>
#include <stdint.h>

#define RING_DEFAULT_PARTITIONS 256
#define RING_MAX_PARTITIONS     65536

/* FNV-1a, 64 bits: stable across builds, platforms and languages. */
uint64_t ring_hash (const void *data, size_t len);
/* partition = fnv1a64(integration id) mod partitions */
uint32_t ring_partition (const char *integration, uint32_t partitions);
/* Rendezvous score of a worker for a partition; the highest score owns it. */
uint64_t ring_score (const char *worker, uint32_t partition);
/* Index of the owner of partition among n worker ids, or -1 when n is 0. Ties go to the
 * smaller id so every broker decides alike. */
int ring_owner (uint32_t partition, const char *const *workers, size_t n);
#endif
