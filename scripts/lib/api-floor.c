/* The floor for scripts/bench-api: a Unix-socket listener that answers every
 * read with a fixed HTTP response. Nothing can start or answer faster. */
#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <unistd.h>
#include <stdio.h>
int main(int argc, char **argv) {
    const char *path = argc > 2 ? argv[2] : "/tmp/floor.sock";
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) { perror("bind"); return 1; }
    char buf[4096];
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    for (;;) {
        int c = accept(s, 0, 0);
        if (c < 0) continue;
        while (read(c, buf, sizeof buf) > 0) write(c, resp, strlen(resp));
        close(c);
    }
}
