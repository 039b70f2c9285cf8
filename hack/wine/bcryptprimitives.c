/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Go >= 1.24 Windows binaries under
 * wine (Debian's Wine 8.0 ships no such DLL, and the Go runtime loads it at start for
 * ProcessPrng). It exports ProcessPrng alone, filling the buffer from BCryptGenRandom with the
 * system-preferred RNG, which wine implements.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c -lbcrypt
 */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* BCryptGenRandom takes a ULONG length; fill larger buffers in chunks. */
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
