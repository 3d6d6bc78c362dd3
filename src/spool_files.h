/* A spool folder's files (see spool.h for the layout): the names a writer gives its
 * lock and its segments, and reading a segment back whole or one record at a time.
 * Shared by the writer (spool.c) and the adoption of gone writers (spool_adopt.c). */
#ifndef DN_SPOOL_FILES_H
#define DN_SPOOL_FILES_H

#include "buf.h"
#include "spool_record.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "<pid>-<16 hex>" with a pid of at most 20 digits. */
#define DN_SPOOL_WRITER_NAME_MAX 37
/* Our file names: the writer, a seq of at most 20 digits, and a suffix. */
#define DN_SPOOL_FILE_NAME_MAX 72

/* "<writer>.lock" into out (DN_SPOOL_FILE_NAME_MAX bytes); false when too long. */
bool dn_spool_lock_name(char *out, const char *writer);
/* "<writer>.<seq>.log" into out (DN_SPOOL_FILE_NAME_MAX bytes); false when too long. */
bool dn_spool_segment_name(char *out, const char *writer, uint64_t seq);
/* The writer and seq of "<writer>.lock" (seq 0) or "<writer>.<seq>.log"; false for a
 * file of any other shape, which is not ours and is left alone. */
bool dn_spool_parse_file_name(const char *name, char writer[DN_SPOOL_WRITER_NAME_MAX + 1],
                              uint64_t *seq);

/* The whole file into out; false with errno set when it cannot be read. */
bool dn_spool_read_whole_file(int fd, dn_buf *out);
/* Reads the EVENT record of size bytes at offset into buf; false when it cannot be
 * read or is no longer intact, with the reason (naming dir) in error. */
bool dn_spool_read_event(int fd, uint64_t offset, uint64_t size, dn_buf *buf, dn_spool_record *r,
                         const char *dir, char *error, size_t error_size);

#endif
