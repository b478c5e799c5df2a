/* flood: open-loop UDP DNS load at a fixed offered rate, for the overload test.
 *
 * dnsperf is closed-loop (at most -q queries outstanding), so it can never
 * offer more than a server answers; an overload test needs an offered rate
 * that does not back off. flood sends queries from QFILE (dnsperf format:
 * "name TYPE" per line, TYPE A or AAAA) round-robin at RATE queries/s
 * (0 = as fast as it can) for DURATION seconds with sendmmsg, and counts
 * responses with recvmmsg on the same socket (same thread, non-blocking).
 * Queries carry no EDNS, RD=0, ID = running counter (like dnsperf).
 *
 * It prints one line of key=value pairs:
 *   sent       queries sent during DURATION
 *   answered   responses received during DURATION + 1 s grace
 *   send_qps   sent / DURATION (what was really offered)
 *   ans_qps    responses received while sending / DURATION
 *   noerror nxdomain refused other   responses by RCODE
 *   short      sendmmsg calls that sent less than asked (client-side drops)
 *   drops      responses the kernel dropped at this socket (/proc/net/udp)
 *
 * With MODE "noread" it does not read responses while sending (so all of
 * this core goes to sending: a higher offered rate); the kernel queues what
 * fits in the socket buffer and counts the rest as drops, and answered =
 * responses read after the run + drops (ans_qps then also counts the last
 * second's stragglers; the server's backlog is a few ms of traffic).
 *
 * With MODE "lat:PATH" (needs RATE > 0) it reads answers while sending and
 * times every query: send time (CLOCK_MONOTONIC, the clock of Python's
 * time.monotonic()) and latency, the time from the sendmmsg call that sent
 * it to the recvmmsg call that returned its answer (the loop spins, so that
 * is microseconds of client overhead at most). An answer is matched to the
 * latest query sent with its 16-bit ID, so latencies above 65536 / RATE
 * seconds are not told apart (3.3 s at 20,000 q/s). PATH gets: count n
 * (uint64), n send times (double, s), n latencies (float, s; -1 = no
 * answer within the 1 s grace), native byte order. The printed line adds
 * p50_us p99_us p999_us max_us lost over all queries.
 *
 * usage: flood ADDR PORT QFILE RATE DURATION [noread|lat:PATH]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAXQ 1000000
#define QMAX 300

static unsigned char *qbuf;   /* MAXQ queries of QMAX bytes */
static int *qlen;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* wire-encodes "name" + qtype into p; returns the length or -1 */
static int encode(unsigned char *p, const char *name, int qtype) {
    memset(p, 0, 12);
    p[5] = 1; /* QDCOUNT=1, RD=0, no EDNS */
    int o = 12;
    const char *s = name;
    while (*s && *s != '.') {
        const char *e = strchr(s, '.');
        int l = e ? (int)(e - s) : (int)strlen(s);
        if (l <= 0 || l > 63 || o + l + 1 > QMAX - 6) return -1;
        p[o++] = (unsigned char)l;
        memcpy(p + o, s, l);
        o += l;
        s += l;
        if (*s == '.') s++;
    }
    p[o++] = 0;
    p[o++] = qtype >> 8; p[o++] = qtype & 255;
    p[o++] = 0; p[o++] = 1;
    return o;
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* receive-queue drops of socket fd, from /proc/net/udp (last column) */
static unsigned long long udp_drops(int fd) {
    struct sockaddr_in me;
    socklen_t sl = sizeof me;
    if (getsockname(fd, (struct sockaddr *)&me, &sl) < 0) return 0;
    FILE *f = fopen("/proc/net/udp", "r");
    if (!f) return 0;
    char line[512], want[32];
    snprintf(want, sizeof want, ":%04X ", ntohs(me.sin_port));
    unsigned long long drops = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, want);
        /* local_address is the 2nd field: "  sl  local_address rem_address ..." */
        if (!p || p > line + 24) continue;
        size_t n = strlen(line);
        while (n && (line[n - 1] == ' ' || line[n - 1] == '\n')) line[--n] = 0;
        char *last = strrchr(line, ' ');
        if (last) drops = strtoull(last + 1, NULL, 10);
        break;
    }
    fclose(f);
    return drops;
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: flood ADDR PORT QFILE RATE DURATION [noread|lat:PATH]\n");
        return 2;
    }
    const char *addr = argv[1];
    int port = atoi(argv[2]);
    double rate = atof(argv[4]), dur = atof(argv[5]);
    int noread = argc == 7 && !strcmp(argv[6], "noread");
    const char *latpath = argc == 7 && !strncmp(argv[6], "lat:", 4) ? argv[6] + 4 : NULL;
    if (latpath && rate <= 0) { fprintf(stderr, "lat: needs RATE > 0\n"); return 2; }
    /* per-query send time and latency (lat mode) */
    size_t nrec = latpath ? (size_t)(rate * dur) + 2 * BATCH : 0;
    double *sent_at = nrec ? malloc(nrec * sizeof(double)) : NULL;
    float *lat = nrec ? malloc(nrec * sizeof(float)) : NULL;
    if (nrec && (!sent_at || !lat)) { perror("malloc"); return 1; }
    for (size_t i = 0; i < nrec; i++) lat[i] = -1.0f;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) { fprintf(stderr, "bad addr\n"); return 2; }

    qbuf = malloc((size_t)MAXQ * QMAX);
    qlen = malloc(sizeof(int) * MAXQ);
    FILE *f = fopen(argv[3], "r");
    if (!f || !qbuf || !qlen) { perror("open"); return 1; }
    char line[512], name[300], type[16];
    int nq = 0;
    while (nq < MAXQ && fgets(line, sizeof line, f)) {
        if (sscanf(line, "%299s %15s", name, type) != 2) continue;
        int t = !strcmp(type, "AAAA") ? 28 : 1;
        int l = encode(qbuf + (size_t)nq * QMAX, name, t);
        if (l > 0) qlen[nq++] = l;
    }
    fclose(f);
    if (!nq) { fprintf(stderr, "no queries in %s\n", argv[3]); return 1; }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 32 << 20;
    /* FORCE variants pass rmem_max/wmem_max when run as root */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); return 1; }

    static struct mmsghdr tx[BATCH], rx[BATCH];
    static struct iovec txv[BATCH], rxv[BATCH];
    static unsigned char rbuf[BATCH][1500];
    static unsigned char sbuf[BATCH][QMAX];
    for (int i = 0; i < BATCH; i++) {
        rxv[i].iov_base = rbuf[i]; rxv[i].iov_len = sizeof rbuf[i];
        rx[i].msg_hdr.msg_iov = &rxv[i]; rx[i].msg_hdr.msg_iovlen = 1;
        txv[i].iov_base = sbuf[i];
        tx[i].msg_hdr.msg_iov = &txv[i]; tx[i].msg_hdr.msg_iovlen = 1;
    }

    unsigned long long sent = 0, ans = 0, ans_in = 0, shorts = 0;
    unsigned long long rc[4] = {0};
    unsigned idx = 0, qid = 0;
    double t0 = now(), end = t0 + dur, t;
    while ((t = now()) < end + 1.0) {
        if (t < end) {
            long long due = rate > 0 ? (long long)((t - t0) * rate) - (long long)sent : BATCH;
            if (due > BATCH) due = BATCH;
            if (nrec && sent + (unsigned long long)due > nrec) due = (long long)(nrec - sent);
            if (due > 0) {
                for (int i = 0; i < due; i++) {
                    int l = qlen[idx];
                    memcpy(sbuf[i], qbuf + (size_t)idx * QMAX, l);
                    sbuf[i][0] = qid >> 8; sbuf[i][1] = qid & 255;
                    qid++;
                    txv[i].iov_len = l;
                    if (++idx == (unsigned)nq) idx = 0;
                }
                double ts = now();
                int r = sendmmsg(fd, tx, (unsigned)due, MSG_DONTWAIT);
                if (r < due) shorts++;
                if (r > 0) {
                    for (int i = 0; nrec && i < r; i++) sent_at[sent + i] = ts;
                    sent += r;
                }
                /* IDs run with `sent`: those not sent are reused next time */
                if (r < due) qid -= (unsigned)(due - (r > 0 ? r : 0));
            }
        }
        for (; !noread || t >= end;) {
            int r = recvmmsg(fd, rx, BATCH, MSG_DONTWAIT, NULL);
            if (r <= 0) break;
            double tr = nrec ? now() : 0;
            for (int i = 0; i < r; i++) {
                if (rx[i].msg_len < 12) continue;
                if (nrec && sent) {
                    unsigned id = (unsigned)rbuf[i][0] << 8 | rbuf[i][1];
                    unsigned long long last = sent - 1;
                    unsigned long long back = (last - id) & 0xffff;
                    if (back <= last) {
                        unsigned long long s = last - back;
                        if (lat[s] < 0) lat[s] = (float)(tr - sent_at[s]);
                    }
                }
                int code = rbuf[i][3] & 15;
                rc[code == 0 ? 0 : code == 3 ? 1 : code == 5 ? 2 : 3]++;
            }
            ans += r;
            if (now() < end) ans_in += r;
            if (r < BATCH) break;
        }
        if (t >= end && rate <= 0) usleep(1000);
    }
    unsigned long long drops = udp_drops(fd);
    if (noread) {
        ans += drops;
        ans_in = ans;
    }
    printf("sent=%llu answered=%llu send_qps=%.0f ans_qps=%.0f noerror=%llu nxdomain=%llu "
           "refused=%llu other=%llu short=%llu drops=%llu",
           sent, ans, sent / dur, ans_in / dur, rc[0], rc[1], rc[2], rc[3], shorts, drops);
    if (nrec) {
        FILE *o = fopen(latpath, "wb");
        unsigned long long n = sent;
        if (!o || fwrite(&n, sizeof n, 1, o) != 1 || fwrite(sent_at, sizeof(double), n, o) != n ||
            fwrite(lat, sizeof(float), n, o) != n || fclose(o) != 0) {
            perror(latpath);
            return 1;
        }
        /* percentiles over all queries: sort the answered latencies */
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (lat[i] >= 0) lat[k++] = lat[i];
        qsort(lat, k, sizeof(float), cmpf);
#define PCT(p) (k ? 1e6 * lat[(size_t)((p) * (k - 1))] : -1.0)
        printf(" p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f lost=%llu",
               PCT(0.50), PCT(0.99), PCT(0.999), PCT(1.0), (unsigned long long)(n - k));
    }
    printf("\n");
    return 0;
}
