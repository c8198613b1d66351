/* FastCGI "hello" for scripts/bench-spawn.sh: the same binary runs under
 * cgihost --spawn and under lighttpd's bin-path, so the servers are what
 * differs. libfcgi (libfcgi-dev); accepts on fd 0 like every spawned worker;
 * honours FCGI_KEEP_CONN. Built with gcc -O2. */
#include <fcgiapp.h>

int main(void)
{
    static const char reply[] = "Content-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
    FCGX_Request req;
    if (FCGX_Init() != 0 || FCGX_InitRequest(&req, 0, 0) != 0)
        return 1;
    while (FCGX_Accept_r(&req) >= 0) {
        FCGX_PutStr(reply, sizeof reply - 1, req.out);
        FCGX_Finish_r(&req);
    }
    return 0;
}
