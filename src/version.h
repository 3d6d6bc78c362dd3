#ifndef DN_VERSION_H
#define DN_VERSION_H

/* The one place the version is written; CMake and the rockspec read it from here. */
#define DN_VERSION "0.1.0"

#endif
