/* A server's answer body is untrusted input: the error code taken from it becomes
 * err.code, so it must be a plain identifier or nothing. */
#include "policy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char code[DN_CODE_MAX + 1];
    if (!dn_answer_code((const char *)data, size, code)) return 0;
    size_t len = strlen(code);
    if (len == 0 || len > DN_CODE_MAX) abort();
    for (size_t i = 0; i < len; i++) {
        char c = code[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) abort();
    }
    return 0;
}
