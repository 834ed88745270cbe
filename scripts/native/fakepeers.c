/* fakepeers SPEC: serves R fake ipfs-cluster daemons on loopback. SPEC lines:
   "IP ID" per peer; the first line is "full" or "few" (what /id's cluster_peers
   lists: all R IDs, or the peer and the next two). IP:9094 answers GET /id
   (JSON) and GET /health (204), keep-alive; IP:9096 sends 24 random bytes on
   accept (like the pnet nonce) and stays open until the other side closes.
   Binds only 127.0.0.0/8. stdin: "stats" prints one JSON line and resets the
   counters; EOF exits. Prints "ready" when listening. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { LISTEN_API, LISTEN_CLUSTER, CONN_API, CONN_CLUSTER, CONTROL };
typedef struct { int kind, peer, fd; char in[4096]; size_t inlen; const char *out; size_t outlen, outoff; } Conn;
static char **resp; static size_t *resplen; static int npeers;
static long n_http, n_tcp; static double first, last, bytes;
static const char health[] = "HTTP/1.1 204 No Content\r\n\r\n";
static const char notfound[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
static int ep;

static double now(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void touch(void) { double t = now(); if (first == 0) first = t; last = t; }
static void die(const char *m) { perror(m); exit(1); }

static void add(int fd, Conn *c, unsigned ev) {
    struct epoll_event e = { .events = ev, .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl");
}
static void drop(Conn *c) { close(c->fd); free(c); }

static int listen_on(const char *ip, int port) {
    struct in_addr a;
    if (inet_pton(AF_INET, ip, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127) { fprintf(stderr, "not loopback: %s\n", ip); exit(1); }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = a };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { fprintf(stderr, "bind %s:%d: %s\n", ip, port, strerror(errno)); exit(1); }
    if (listen(fd, 128) < 0) die("listen");
    return fd;
}

/* Writes what is pending; 1 when all is out. */
static int flush_out(Conn *c) {
    while (c->outoff < c->outlen) {
        ssize_t n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (n < 0) { if (errno == EAGAIN) return 0; return -1; }
        c->outoff += n; bytes += n;
    }
    return 1;
}

static void api_readable(Conn *c) {
    for (;;) {
        if (c->outoff < c->outlen) return; /* still writing the last answer */
        char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (!end) {
            if (c->inlen == sizeof c->in) { drop(c); return; }
            ssize_t n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
            if (n == 0 || (n < 0 && errno != EAGAIN)) { drop(c); return; }
            if (n < 0) return;
            c->inlen += n;
            continue;
        }
        touch();
        size_t used = end + 4 - c->in;
        if (!strncmp(c->in, "GET /id ", 8)) { c->out = resp[c->peer]; c->outlen = resplen[c->peer]; }
        else if (!strncmp(c->in, "GET /health ", 12)) { c->out = health; c->outlen = sizeof health - 1; }
        else { c->out = notfound; c->outlen = sizeof notfound - 1; }
        c->outoff = 0;
        memmove(c->in, c->in + used, c->inlen - used); c->inlen -= used;
        int r = flush_out(c);
        if (r < 0) { drop(c); return; }
        if (r == 0) {
            struct epoll_event e = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
            return;
        }
        n_http++; touch();
    }
}

static void api_writable(Conn *c) {
    int r = flush_out(c);
    if (r < 0) { drop(c); return; }
    if (r == 1) {
        n_http++; touch();
        struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
        api_readable(c);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: fakepeers SPEC\n"); return 2; }
    FILE *f = fopen(argv[1], "r");
    if (!f) die("spec");
    char mode[16], ip[64], id[128];
    if (fscanf(f, "%15s", mode) != 1) die("spec mode");
    int cap = 1024; char (*ips)[64] = malloc(cap * 64), (*ids)[128] = malloc(cap * 128);
    while (fscanf(f, "%63s %127s", ip, id) == 2) {
        if (npeers == cap) { cap *= 2; ips = realloc(ips, cap * 64); ids = realloc(ids, cap * 128); }
        strcpy(ips[npeers], ip); strcpy(ids[npeers], id); npeers++;
    }
    int few = !strcmp(mode, "few");
    size_t sharedcap = 16 + (size_t)npeers * 132; char *shared = malloc(sharedcap); size_t sl = 0;
    shared[sl++] = '[';
    for (int i = 0; i < npeers; i++) sl += sprintf(shared + sl, "%s\"%s\"", i ? "," : "", ids[i]);
    shared[sl++] = ']'; shared[sl] = 0;
    resp = calloc(npeers, sizeof *resp); resplen = calloc(npeers, sizeof *resplen);
    for (int i = 0; i < npeers; i++) {
        char small[512]; const char *list = shared;
        if (few) {
            int k = npeers < 3 ? npeers : 3; size_t l = 0; small[l++] = '[';
            for (int j = 0; j < k; j++) l += sprintf(small + l, "%s\"%s\"", j ? "," : "", ids[(i + j) % npeers]);
            small[l++] = ']'; small[l] = 0; list = small;
        }
        size_t cap2 = strlen(list) + 1024; char *body = malloc(cap2);
        int bl = snprintf(body, cap2,
            "{\"id\":\"%s\",\"addresses\":[\"/ip4/%s/tcp/9096/p2p/%s\"],\"cluster_peers\":%s,"
            "\"cluster_peers_addresses\":[],\"version\":\"1.1.6\",\"commit\":\"bench\",\"peername\":\"fake%d\","
            "\"rpc_protocol_version\":\"/ipfscluster/v1.0/rpc\",\"error\":\"\","
            "\"ipfs\":{\"id\":\"\",\"addresses\":null,\"error\":\"no kubo (bench fake peer)\"}}",
            ids[i], ips[i], ids[i], list, i);
        resp[i] = malloc(bl + 128);
        resplen[i] = sprintf(resp[i], "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", bl);
        memcpy(resp[i] + resplen[i], body, bl); resplen[i] += bl; free(body);
    }
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);
    ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < npeers; i++) {
        Conn *a = calloc(1, sizeof *a); a->kind = LISTEN_API; a->peer = i; a->fd = listen_on(ips[i], 9094); add(a->fd, a, EPOLLIN);
        Conn *b = calloc(1, sizeof *b); b->kind = LISTEN_CLUSTER; b->peer = i; b->fd = listen_on(ips[i], 9096); add(b->fd, b, EPOLLIN);
    }
    Conn ctl = { .kind = CONTROL, .fd = 0 }; add(0, &ctl, EPOLLIN);
    printf("ready\n"); fflush(stdout);
    struct epoll_event evs[256]; char cbuf[256]; size_t clen = 0;
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
        for (int k = 0; k < n; k++) {
            Conn *c = evs[k].data.ptr;
            if (c->kind == LISTEN_API || c->kind == LISTEN_CLUSTER) {
                for (;;) {
                    int fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    Conn *d = calloc(1, sizeof *d); d->fd = fd; d->peer = c->peer; touch();
                    if (c->kind == LISTEN_CLUSTER) {
                        unsigned char nonce[24]; getrandom(nonce, sizeof nonce, 0);
                        if (write(fd, nonce, sizeof nonce) > 0) bytes += sizeof nonce;
                        d->kind = CONN_CLUSTER; n_tcp++;
                    } else d->kind = CONN_API;
                    add(fd, d, EPOLLIN);
                }
            } else if (c->kind == CONN_CLUSTER) {
                char buf[4096]; ssize_t r = read(c->fd, buf, sizeof buf);
                if (r == 0 || (r < 0 && errno != EAGAIN)) drop(c);
            } else if (c->kind == CONN_API) {
                if (evs[k].events & EPOLLOUT) api_writable(c); else api_readable(c);
            } else {
                ssize_t r = read(0, cbuf + clen, sizeof cbuf - 1 - clen);
                if (r <= 0) return 0;
                clen += r; cbuf[clen] = 0;
                char *nl;
                while ((nl = strchr(cbuf, '\n'))) {
                    *nl = 0;
                    if (!strcmp(cbuf, "stats")) {
                        struct rusage ru; getrusage(RUSAGE_SELF, &ru);
                        double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
                        printf("{\"http\":%ld,\"tcp\":%ld,\"first\":%s%.6f,\"last\":%.6f,\"bytes\":%.0f,\"cpu\":%.6f}\n",
                               n_http, n_tcp, "", first, last, bytes, cpu);
                        fflush(stdout);
                        n_http = n_tcp = 0; first = last = 0; bytes = 0;
                    }
                    clen -= nl + 1 - cbuf; memmove(cbuf, nl + 1, clen + 1);
                }
            }
        }
    }
}
