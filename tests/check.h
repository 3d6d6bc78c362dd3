/* The assertions of the C tests: each failed check prints file:line and the values
 * involved, and counts; a test program runs its cases with RUN_CASE and returns
 * check_report() from main. Header-only, each test program includes it once. */
#ifndef DN_TEST_CHECK_H
#define DN_TEST_CHECK_H

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_cases;
static int check_failed_cases;

/* Prints bytes as a C string literal would show them, so NULs, CR/LF and UTF-8 in a
 * mismatch are visible. NULL prints as (null). */
static inline void check_print_bytes(const char *bytes, size_t len)
{
    if (!bytes) {
        fputs("(null)", stderr);
        return;
    }
    fputc('"', stderr);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)bytes[i];
        if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (isprint(c))
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fputc('"', stderr);
}

static inline void check_failed(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    check_failures++;
}

static inline bool check_true(const char *file, int line, const char *what, bool ok)
{
    if (!ok) check_failed(file, line, what);
    return ok;
}

__attribute__((format(printf, 3, 4))) static inline void check_fail_with(const char *file, int line,
                                                                         const char *format, ...)
{
    fprintf(stderr, "%s:%d: check failed: ", file, line);
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    check_failures++;
}

static inline bool check_int_eq(const char *file, int line, const char *what, intmax_t actual,
                                intmax_t expected)
{
    if (actual == expected) return true;
    check_failed(file, line, what);
    fprintf(stderr, "    actual:   %jd\n    expected: %jd\n", actual, expected);
    return false;
}

static inline bool check_uint_eq(const char *file, int line, const char *what, uintmax_t actual,
                                 uintmax_t expected)
{
    if (actual == expected) return true;
    check_failed(file, line, what);
    fprintf(stderr, "    actual:   %ju\n    expected: %ju\n", actual, expected);
    return false;
}

static inline bool check_mem_eq(const char *file, int line, const char *what, const char *actual,
                                size_t actual_len, const char *expected, size_t expected_len)
{
    bool same = actual && expected
                    ? actual_len == expected_len && memcmp(actual, expected, actual_len) == 0
                    : actual == expected;
    if (same) return true;
    check_failed(file, line, what);
    fputs("    actual:   ", stderr);
    check_print_bytes(actual, actual_len);
    fprintf(stderr, " (%zu bytes)\n    expected: ", actual_len);
    check_print_bytes(expected, expected_len);
    fprintf(stderr, " (%zu bytes)\n", expected_len);
    return false;
}

static inline bool check_str_eq(const char *file, int line, const char *what, const char *actual,
                                const char *expected)
{
    return check_mem_eq(file, line, what, actual, actual ? strlen(actual) : 0, expected,
                        expected ? strlen(expected) : 0);
}

/* Each macro evaluates to true when the check passed, so a test can stop early:
 * `if (!CHECK(p != NULL)) return;`. */
#define CHECK(cond) check_true(__FILE__, __LINE__, #cond, (cond))
/* An unconditional failure, for checks a loop makes over a table of cases. */
#define FAIL(...) check_fail_with(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK_INT_EQ(actual, expected)                                                             \
    check_int_eq(__FILE__, __LINE__, #actual " == " #expected, (intmax_t)(actual),                 \
                 (intmax_t)(expected))
#define CHECK_UINT_EQ(actual, expected)                                                            \
    check_uint_eq(__FILE__, __LINE__, #actual " == " #expected, (uintmax_t)(actual),               \
                  (uintmax_t)(expected))
#define CHECK_STR_EQ(actual, expected)                                                             \
    check_str_eq(__FILE__, __LINE__, #actual " == " #expected, (actual), (expected))
#define CHECK_MEM_EQ(actual, actual_len, expected, expected_len)                                   \
    check_mem_eq(__FILE__, __LINE__, #actual " == " #expected, (actual), (actual_len), (expected), \
                 (expected_len))

/* Runs one case and says whether it passed; a case fails when any of its checks did. */
#define RUN_CASE(test_function)                                                                    \
    do {                                                                                           \
        int failures_before = check_failures;                                                      \
        test_function();                                                                           \
        check_cases++;                                                                             \
        if (check_failures != failures_before) {                                                   \
            check_failed_cases++;                                                                  \
            fprintf(stderr, "FAIL %s\n", #test_function);                                          \
        }                                                                                          \
    } while (0)

/* The exit status of the test program. */
static inline int check_report(const char *program)
{
    if (check_failures == 0) {
        printf("%s: %d cases passed\n", program, check_cases);
        return 0;
    }
    fprintf(stderr, "%s: %d of %d cases failed (%d checks)\n", program, check_failed_cases,
            check_cases, check_failures);
    return 1;
}

#endif
