/* A disk that can lose power: the file operations of the core under one folder are
 * recorded (each write with its bytes, each fsync/fdatasync of a file or a folder,
 * each create, mkdir, rename, unlink and truncate), and from the record the disk a
 * power cut after any of them could leave is laid down in a fresh folder.
 *
 * The seam is the linker: the test program is linked with -Wl,--wrap for the libc
 * calls below, so the core's own code runs unchanged and its calls reach __wrap_*
 * here, which perform them on the real folder and note them. What a power cut keeps
 * follows POSIX, not the kindness of one file system:
 *   - a file's bytes and size are on disk as of its last fsync/fdatasync; each write
 *     since then is kept or lost per 512-byte sector, later sectors independently of
 *     earlier ones; the size may be any it had since, so an extended file may end in
 *     zeros, or lose its tail;
 *   - a folder's entries are on disk as of its last fsync; each create, mkdir, rename
 *     and unlink since then is kept or lost on its own (a file may be missing, or
 *     still under its old name, or back after an unlink). */
#ifndef DUKANEXT_TESTS_CRASH_DISK_H
#define DUKANEXT_TESTS_CRASH_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How the unsynced changes of a crash state are chosen. */
enum {
    CRASH_LOSE_ALL = 0, /* every unsynced change lost: only what was synced */
    CRASH_KEEP_ALL = 1, /* every change kept, as after a kill: the page cache made it */
    /* 2 and up: each change (each sector of a write) kept or lost at random */
};

/* Begins recording the operations under root, an existing folder. What it holds is
 * taken as on disk, synced: recorded first, as the operations before the first crash
 * point. */
void crash_disk_record(const char *root);
/* Stops recording; the record stays until crash_disk_forget. */
void crash_disk_stop(void);
void crash_disk_forget(void);

/* The record put aside while another is made (of a recovery from one of its crash
 * states), and taken back afterwards, the other forgotten. */
typedef struct crash_record crash_record;
crash_record *crash_disk_set_aside(void);
void crash_disk_take_back(crash_record *saved);

/* Operations recorded so far: the crash points are crash_disk_first_point() (0 when
 * root was empty) to this. */
size_t crash_disk_ops(void);
size_t crash_disk_first_point(void);
/* How many of them were syncs of a folder, of a file, removals and writes: a run
 * checks that the seam saw the core's calls, and that it did what it meant to. */
size_t crash_disk_folder_syncs(void);
size_t crash_disk_file_syncs(void);
size_t crash_disk_unlinks(void);
size_t crash_disk_writes(void);

/* Lays down in out_root (an existing empty folder) the disk a power cut could leave
 * after the first `point` operations; state picks the choices (see above), seed
 * makes the random ones repeatable. False when out_root cannot be written. */
bool crash_disk_build(size_t point, int state, uint64_t seed, const char *out_root);

/* Prints the operations from..to (exclusive) of the record, for a failure report. */
void crash_disk_print_ops(size_t from, size_t to);

#endif
